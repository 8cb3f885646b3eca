"""Stage 0, `vae` (small configs only; the 5B path uses Wan's VAE as is).

The Wan2.2 VAE architecture at small widths, causal in time like the real one, trained on
random windows of 1 + 4k frames: L1 (optionally weighted towards the pixels that move,
`losses.motion_weights`, and towards a fixed region such as the mouth, `losses.region_weights`)
+ (1 - SSIM) reconstruction (SSIM is our LPIPS-free perceptual proxy: no pretrained network
can be downloaded here) and a small KL to N(0, 1) on a reparameterised sample. At export the
per-channel mean and std of the latents are measured and written as `latents_mean` /
`latents_std`, so the DiT sees unit-scale latents exactly as it does with Wan's VAE.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from streamavatar_cli.models import WanDiT, WanVAE
from streamavatar_cli.train.common import base_config, load_trained_vae, write_model
from streamavatar_cli.train.config import TrainConfig
from streamavatar_cli.train.data import clips, to_video_tensor
from streamavatar_cli.train.loop import SampleRNG, World, optimizer_step
from streamavatar_cli.train.losses import (
    combined_weights,
    kl_to_standard_normal,
    motion_weights,
    region_weights,
    ssim,
    temporal_change_l1,
    weighted_mean,
)

WINDOWS_PER_CLIP = 64  # virtual samples per clip: each index draws its own random window


class VAEStage:
    def __init__(self, cfg: TrainConfig, world: World):
        self.cfg, self.world = cfg, world
        self.opts = cfg.stage_options
        if self.opts.region_crops > 0 and len(self.opts.region_box) != 4:
            raise ValueError("[vae] region_crops places crops on region_box: set region_box too")
        self.model_config = base_config(cfg)
        self.decoder_only = self.opts.train == "decoder"
        self.vae = self.build_vae(cfg)
        self.frames = [c.frames for c in clips(cfg.data)]
        if not self.frames:
            raise ValueError("the vae stage got no clips: check [data]")
        self.n_samples = len(self.frames) * WINDOWS_PER_CLIP
        self.modules = {"vae": self.vae}
        self.optimizers = {
            "vae": torch.optim.AdamW(
                [p for p in self.vae.parameters() if p.requires_grad], lr=cfg.optim.lr,
                betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay,
            )
        }  # fmt: skip

    def build_vae(self, cfg: TrainConfig) -> WanVAE:
        """From nothing (seeded), or from `model.vae_from`. Trained whole, it sees raw latents
        (statistics 0 / 1, measured again at export); decoder-only, it keeps the starting
        statistics, so it decodes the unit-scale latents a DiT trained on that VAE makes."""
        vae_cfg = self.model_config.vae
        if not self.decoder_only:
            z = vae_cfg.z_dim
            vae_cfg = dataclasses.replace(vae_cfg, latents_mean=(0.0,) * z, latents_std=(1.0,) * z)
        torch.manual_seed(cfg.run.seed)
        vae = WanVAE(vae_cfg).train()
        if cfg.model.vae_from:
            vae.load_state_dict(load_trained_vae(cfg.model.vae_from)[1].state_dict())
        if self.decoder_only:  # what makes the latents is frozen
            for module in vae.latent_modules():
                module.requires_grad_(False).eval()
        return vae

    def window(
        self, index: int, g: torch.Generator, crop: bool = True, long: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A random window of clip `index` [1, 3, F, H, W] and its region weights (None when
        off), cut from the whole frame's so that a crop weights its part of the box."""
        o = self.opts
        frames = self.frames[index % len(self.frames)]
        n = o.long_clip_frames if long else o.clip_frames
        start = int(torch.randint(0, len(frames) - n + 1, (1,), generator=g))
        window = frames[start : start + n]
        height, width = window.shape[1:3]
        region = region_weights(height, width, o.region_box, o.region_weight)
        side = o.long_crop if long else o.crop
        if crop and 0 < side < min(height, width):
            stride = self.vae.config.spatial_stride
            on_box = o.region_crops > 0 and float(torch.rand((), generator=g)) < o.region_crops
            x0, y0, x1, y1 = o.region_box if on_box else (None,) * 4
            y, x = (
                _pick(crop_starts(size, side, stride, None if lo is None else (lo, hi)), g)
                for size, lo, hi in ((height, y0, y1), (width, x0, x1))
            )
            window = window[:, y : y + side, x : x + side]
            if region is not None:
                region = region[..., y : y + side, x : x + side]
        return to_video_tensor(window), region

    def step(self, step: int, indices: list[int], rng: SampleRNG) -> dict[str, float]:
        o = self.opts
        long = 0 < o.long_from <= step
        windows = [self.window(i, rng(i), long=long) for i in indices]
        video = torch.cat([v for v, _ in windows])
        with torch.set_grad_enabled(not self.decoder_only):
            mu, log_var = self.vae.encode_moments(video)
        eps = torch.cat([torch.randn(mu[:1].shape, generator=rng(i, 1)) for i in indices])
        if self.decoder_only:  # unit-scale latents, as a DiT sees them
            z = mu + o.latent_noise * eps
        else:
            z = mu + eps * (0.5 * log_var.clamp(-30, 20)).exp()
        recon = self.vae.stream_decoder().decode_differentiable(z, clamp=False)
        region = torch.cat([r for _, r in windows]) if windows[0][1] is not None else None
        weights = combined_weights(motion_weights(video, o.motion_weight, o.motion_tau), region)
        l1 = weighted_mean((recon - video).abs(), weights)
        s = ssim(recon.transpose(1, 2).flatten(0, 1), video.transpose(1, 2).flatten(0, 1))
        kl = kl_to_standard_normal(mu, log_var)
        loss = o.l1_weight * l1 + o.ssim_weight * (1 - s)
        if not self.decoder_only:
            loss = loss + o.kl_weight * kl
        logs = {"l1": l1.item(), "ssim": s.item(), "kl": kl.item()}
        if o.temporal_weight > 0:
            change = temporal_change_l1(recon, video, weights)
            loss = loss + o.temporal_weight * change
            logs["change"] = change.item()
        optimizer_step(self.optimizers["vae"], self.vae, loss, self.world, self.cfg.optim.grad_clip)
        return {"loss": loss.item(), **logs}

    @torch.no_grad()
    def latent_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        g = torch.Generator().manual_seed(self.cfg.run.seed + 1)
        n = min(self.opts.stats_clips, len(self.frames))
        lat = torch.cat(
            [self.vae.encode(self.window(i, g, crop=False)[0]) for i in range(n)], dim=2
        )
        per_channel = lat.transpose(0, 1).flatten(1)
        mean = per_channel.mean(1).tolist()
        std = per_channel.std(1).clamp_min(1e-3).tolist()
        return tuple(round(x, 5) for x in mean), tuple(round(x, 5) for x in std)

    def export(self, folder: Path) -> None:
        self.vae.eval()
        if self.decoder_only:  # the frozen encoder's latents: the statistics do not move
            vae_cfg = self.vae.config
            mean, std = vae_cfg.latents_mean, vae_cfg.latents_std
        else:
            mean, std = self.latent_stats()
            vae_cfg = dataclasses.replace(self.vae.config, latents_mean=mean, latents_std=std)
            self.vae.config = vae_cfg.validate()
            self.vae._stats.clear()
        config = dataclasses.replace(self.model_config, vae=vae_cfg)
        dit = WanDiT(config.dit)  # untrained placeholder: the folder carries the VAE
        write_model(
            folder, config, dit, self.vae, "base",
            "vae stage output: trained VAE, untrained DiT (not renderable)",
        )  # fmt: skip
        (folder / "vae_stats.json").write_text(
            json.dumps({"latents_mean": mean, "latents_std": std}, indent=1)
        )


def crop_starts(
    size: int, side: int, stride: int, span: tuple[float, float] | None = None
) -> list[int]:
    """Where a crop of `side` may start along a `size` axis (on the `stride` grid); with
    `span` (lo, hi in fractions of the axis), only the starts whose crop holds all of it
    (every start when none does)."""
    starts = list(range(0, size - side + 1, stride))
    if span is None:
        return starts
    held = [s for s in starts if s <= span[0] * size and s + side >= span[1] * size]
    return held or starts


def _pick(options: list[int], g: torch.Generator) -> int:
    return options[int(torch.randint(0, len(options), (1,), generator=g))]


def reconstruction_psnr(vae: WanVAE, frames: np.ndarray) -> float:
    """PSNR (dB) of encode -> decode on 1 + 4k uint8 frames: the number the model card quotes."""
    video = to_video_tensor(frames)
    with torch.no_grad():
        recon = vae.decode(vae.encode(video))
    mse = ((recon - video) / 2).pow(2).mean().item()
    return 10 * np.log10(1.0 / max(mse, 1e-12))

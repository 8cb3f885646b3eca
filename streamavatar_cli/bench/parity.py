"""Ours against diffusers with the same weights on the same inputs: DiT forward, VAE decode.

diffusers is a test dependency, imported only here and only when a comparison runs. Every
comparison also reports the largest output difference, so a ratio is never quoted for two
computations that do not agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from streamavatar_cli.bench.measure import (
    MB,
    Result,
    alternate,
    max_abs_diff,
    median_ms,
    peak_rss_bytes,
    run_child,
)
from streamavatar_cli.config import DiTConfig
from streamavatar_cli.models import WanDiT, WanVAE
from streamavatar_cli.models.dit_io import diffusers_to_official_key
from streamavatar_cli.models.vae_io import diffusers_to_official_vae_keys, vae_config_from_diffusers

TEXT_DIM, TEXT_LEN, IN_CH = 4096, 512, 48  # Wan2.2-TI2V's text and latent widths


@dataclass(frozen=True)
class VersusDiffusers(Result):
    ours_ms: float
    diffusers_ms: float
    max_abs_diff: float
    shape: tuple[int, ...]

    target = 1.05

    def detail(self) -> str:
        return (
            f"ours {self.ours_ms:.0f} ms, diffusers {self.diffusers_ms:.0f} ms, "
            f"input {list(self.shape)}, outputs differ by {self.max_abs_diff:.1e}"
        )


class DiTVersusDiffusers(VersusDiffusers):
    title = "DiT forward: ours / diffusers WanTransformer3DModel"


class VAEVersusDiffusers(VersusDiffusers):
    title = "VAE decode: ours (streaming) / diffusers AutoencoderKLWan"


# ---- DiT ------------------------------------------------------------------------------------


def dit_vs_diffusers(
    dim: int = 768, layers: int = 8, latent: tuple[int, int, int] = (3, 32, 48), rounds: int = 5
) -> DiTVersusDiffusers:
    """Bidirectional forward of a Wan2.2-shaped DiT (head_dim 64, text 512 x 4096): frame 0
    clean, the others at t = 700 (TI2V). The default takes about 1 s per forward on 2 cores."""
    import diffusers

    heads = dim // 64
    reference = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=64,
        in_channels=IN_CH, out_channels=IN_CH, text_dim=TEXT_DIM, freq_dim=256,
        ffn_dim=4 * dim, num_layers=layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6,
    ).eval().requires_grad_(False)  # fmt: skip
    config = DiTConfig(dim=dim, ffn_dim=4 * dim, num_heads=heads, num_layers=layers)
    ours = WanDiT(config).eval().requires_grad_(False)
    state = {diffusers_to_official_key(k): v for k, v in reference.state_dict().items()}
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert not unexpected and all(
        k == "prompt_context" or "audio" in k or "listen" in k for k in missing
    )

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, IN_CH, *latent, generator=g)
    t = torch.tensor([[0.0] + [700.0] * (latent[0] - 1)])
    context = torch.randn(1, TEXT_LEN, TEXT_DIM, generator=g)
    per_token_t = t.repeat_interleave(latent[1] * latent[2] // 4, dim=1)  # diffusers' TI2V form

    with torch.no_grad():
        diff = max_abs_diff(
            ours(x, t, context), reference(x, per_token_t, context, return_dict=False)[0]
        )
        times = alternate(
            {
                "ours": lambda i: ours(x, t, context),
                "diffusers": lambda i: reference(x, per_token_t, context, return_dict=False),
            },
            rounds,
        )
    ours_ms, theirs_ms = median_ms(times["ours"]), median_ms(times["diffusers"])
    return DiTVersusDiffusers(ours_ms / theirs_ms, ours_ms, theirs_ms, diff, tuple(x.shape))


# ---- VAE ------------------------------------------------------------------------------------


def _vae_pair(decoder_dim: int, z_dim: int = IN_CH) -> tuple[Any, WanVAE]:
    """diffusers' Wan2.2 VAE layout at decoder width `decoder_dim` (real: 256) and ours with
    its weights. Latent mean 0 and std 1, so both decode the very same tensor."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    reference = AutoencoderKLWan(
        base_dim=16, decoder_base_dim=decoder_dim, z_dim=z_dim, dim_mult=[1, 2, 4, 4],
        num_res_blocks=2, temperal_downsample=[False, True, True], is_residual=True,
        patch_size=2, in_channels=12, out_channels=12, scale_factor_spatial=16,
        latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim,
    ).eval().requires_grad_(False)  # fmt: skip
    config = vae_config_from_diffusers(dict(reference.config))
    ours = WanVAE(config).eval().requires_grad_(False)
    state = reference.state_dict()
    names = diffusers_to_official_vae_keys(state, config.num_res_blocks)
    ours.load_state_dict({names[k]: v for k, v in state.items()})
    return reference, ours


def vae_vs_diffusers(
    decoder_dim: int = 64, latent: tuple[int, int, int] = (3, 8, 8), rounds: int = 3
) -> VAEVersusDiffusers:
    """Decode the same latents [1, 48, n, h, w] (h, w x16 in pixels): diffusers in one call,
    ours through the streaming decoder one latent frame at a time (how `render` uses it)."""
    reference, ours = _vae_pair(decoder_dim)
    latents = torch.randn(1, IN_CH, *latent, generator=torch.Generator().manual_seed(0))

    def streamed() -> torch.Tensor:
        decoder = ours.stream_decoder()
        return torch.cat(
            [decoder.decode(latents[:, :, i : i + 1]) for i in range(latent[0])], dim=2
        )

    with torch.no_grad():
        diff = max_abs_diff(streamed(), reference.decode(latents).sample)
        times = alternate(
            {"ours": lambda i: streamed(), "diffusers": lambda i: reference.decode(latents)}, rounds
        )
    ours_ms, theirs_ms = median_ms(times["ours"]), median_ms(times["diffusers"])
    return VAEVersusDiffusers(ours_ms / theirs_ms, ours_ms, theirs_ms, diff, tuple(latents.shape))


@dataclass(frozen=True)
class VAEMemory(Result):
    frames: tuple[int, int]
    ours_peak_mb: tuple[float, float]
    ours_state_mb: tuple[float, float]
    diffusers_peak_mb: tuple[float, float]

    title = "VAE decode memory: our peak RSS at 2n / n latent frames"
    target = 1.10

    def detail(self) -> str:
        n, n2 = self.frames
        (o1, o2), (d1, d2) = self.ours_peak_mb, self.diffusers_peak_mb
        return (
            f"ours {o1:.0f} -> {o2:.0f} MB (decoder state {self.ours_state_mb[0]:.1f} -> "
            f"{self.ours_state_mb[1]:.1f} MB), diffusers {d1:.0f} -> {d2:.0f} MB, "
            f"for {n} -> {n2} latent frames"
        )


def vae_memory(
    decoder_dim: int = 32, frames: int = 8, latent_hw: tuple[int, int] = (16, 16)
) -> VAEMemory:
    """Peak RSS of decoding n and 2n latent frames, each run in its own process: ours streams
    one latent frame at a time and drops the frames, diffusers decodes the clip in one call."""
    import diffusers  # noqa: F401 - fail here, not in the children, when it is missing

    runs = {
        (impl, n): run_child(
            "vae", impl=impl, frames=n, decoder_dim=decoder_dim, latent_hw=list(latent_hw)
        )
        for n in (frames, 2 * frames)
        for impl in ("ours", "diffusers")
    }

    def pair(impl: str, key: str) -> tuple[float, float]:
        return (runs[impl, frames][key] / MB, runs[impl, 2 * frames][key] / MB)

    ours = pair("ours", "peak_rss_bytes")
    return VAEMemory(
        ours[1] / ours[0],
        (frames, 2 * frames),
        ours,
        pair("ours", "state_bytes"),
        pair("diffusers", "peak_rss_bytes"),
    )


@torch.no_grad()
def vae_memory_task(
    impl: str, frames: int, decoder_dim: int, latent_hw: list[int]
) -> dict[str, Any]:
    """(In the child.) Decode `frames` latent frames with one implementation."""
    reference, ours = _vae_pair(decoder_dim)
    latents = torch.randn(1, IN_CH, frames, *latent_hw, generator=torch.Generator().manual_seed(0))
    setup_peak = peak_rss_bytes()
    state = 0
    if impl == "ours":
        del reference
        decoder = ours.stream_decoder()
        for i in range(frames):
            decoder.decode(latents[:, :, i : i + 1])
        state = decoder.cache.nbytes
    else:
        del ours
        reference.decode(latents)
    return {
        "peak_rss_bytes": peak_rss_bytes(),
        "setup_peak_rss_bytes": setup_peak,
        "state_bytes": state,
    }

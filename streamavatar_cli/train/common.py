"""What several stages share: building configs and models, the bidirectional audio forward,
the block-causal student forward, and model-folder output."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from streamavatar_cli.config import MODEL_PRESETS, DiTConfig, ModelConfig, StreamConfig, VAEConfig
from streamavatar_cli.errors import ModelError
from streamavatar_cli.models import WanDiT, WanVAE, load_dit, load_vae
from streamavatar_cli.models.attention import FrameMaskAttention
from streamavatar_cli.models.rapr import teacher_forcing_layout
from streamavatar_cli.pipeline.model import StreamAvatarModel, find_vae_file, save_model
from streamavatar_cli.pipeline.sampler import TIMESTEP_SCALE
from streamavatar_cli.train.config import TrainConfig


def base_config(cfg: TrainConfig) -> ModelConfig:
    """The model config a stage trains and writes.

    Stages that start from our own folders inherit from them: the DiT and stream settings from
    `model.teacher` (so every later stage matches the teacher's weights and the student's
    timesteps), the VAE from `model.vae_from`. Otherwise the preset with the config's overrides.
    """
    if cfg.model.preset not in MODEL_PRESETS:
        raise ValueError(f"model.preset {cfg.model.preset!r}; available: {sorted(MODEL_PRESETS)}")
    base = MODEL_PRESETS[cfg.model.preset]
    if cfg.model.teacher:
        if cfg.model.dit:
            raise ValueError("[model] dit overrides are for the teacher stage; later stages "
                             "take the DiT shape from model.teacher")  # fmt: skip
        base = model_folder_config(cfg.model.teacher)
    dit = DiTConfig.from_dict({**base.dit.to_dict(), **cfg.model.dit})
    vae_fields = {**base.vae.to_dict(), **cfg.model.vae}
    z = vae_fields["z_dim"]
    for key, unit in (("latents_mean", 0.0), ("latents_std", 1.0)):
        if len(vae_fields[key]) != z and key not in cfg.model.vae:
            vae_fields[key] = (unit,) * z  # a new latent width: the vae stage measures them
    vae = VAEConfig.from_dict(vae_fields)
    stream = StreamConfig.from_dict({**base.stream.to_dict(), **cfg.model.stream})
    if cfg.model.vae_from:  # the trained VAE's config, latent statistics included
        vae = model_folder_config(cfg.model.vae_from).vae
    if not cfg.model.teacher:  # the DiT reads and writes the VAE's latents unless told otherwise
        io = {k: vae.z_dim for k in ("in_dim", "out_dim") if k not in cfg.model.dit}
        dit = dataclasses.replace(dit, **io)
    width, height = cfg.data.size
    return dataclasses.replace(
        base, dit=dit, vae=vae, stream=stream, max_area=width * height,
        name=cfg.model.name or base.name, audio=MODEL_PRESETS[cfg.model.preset].audio,
        domain="puppet" if cfg.data.source == "puppet" else "",
    ).validate()  # fmt: skip


def model_folder_config(folder: str | Path) -> ModelConfig:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ModelError(f"{folder}: no config.json; run the earlier training stage first")
    return ModelConfig.load(path)


def load_trained_vae(folder: str | Path) -> tuple[VAEConfig, WanVAE]:
    config = model_folder_config(folder)
    vae = load_vae(find_vae_file(Path(folder)), config=config.vae).eval().requires_grad_(False)
    return config.vae, vae


def load_trained_dit(folder: str | Path, trainable: bool = True) -> WanDiT:
    dit = load_dit(Path(folder), config=model_folder_config(folder).dit)
    return dit.train().requires_grad_(True) if trainable else dit


def write_model(
    folder: Path, config: ModelConfig, dit: WanDiT, vae: WanVAE, kind: str, description: str
) -> Path:
    config = dataclasses.replace(
        config, kind=kind, description=description, audio_trained=kind != "base"
    )
    model = StreamAvatarModel(config.validate(), dit.eval(), vae, source=str(folder))
    return save_model(model, folder)


# ---- forwards ----------------------------------------------------------------------------------


def bidirectional_v(
    dit: WanDiT,
    reference: torch.Tensor,
    x_t: torch.Tensor,
    sigma: torch.Tensor,
    talk: torch.Tensor | None,
    listen: torch.Tensor | None,
) -> torch.Tensor:
    """The teacher's forward: [clean reference | noisy frames at sigma] -> v of the noisy frames.

    reference [B, C, 1, h, w]; x_t [B, C, F, h, w]; sigma [B]; talk/listen [B, F, 8, L, D].
    """
    n = x_t.shape[2]
    t = torch.cat(
        [torch.zeros_like(sigma)[:, None], (sigma * TIMESTEP_SCALE)[:, None].expand(-1, n)], 1
    )
    v = dit(torch.cat([reference, x_t], dim=2), t, talk_audio=talk, listen_audio=listen)
    return v[:, :, 1:]


def guided_v(
    dit: WanDiT,
    reference: torch.Tensor,
    x_t: torch.Tensor,
    sigma: torch.Tensor,
    talk: torch.Tensor,
    listen: torch.Tensor,
    talk_guidance: float = 1.0,
    listen_guidance: float = 1.0,
) -> torch.Tensor:
    """The teacher's velocity with classifier-free guidance on each audio stream:
    v + (g_talk - 1) (v - v(talk zeroed)) + (g_listen - 1) (v - v(listen zeroed)).
    Talk features are zero on every listening or silent frame, so talk guidance works without
    dropout in training; listen guidance wants a teacher trained with `listen_dropout`, which
    makes "no listen features" mean "any listening" rather than an input never seen.
    g = 1 skips that stream's extra forward; g > 1 exaggerates what the stream does to the
    frames (the mouth for talk, nods for listen), which the plain teacher renders too faintly."""
    v = bidirectional_v(dit, reference, x_t, sigma, talk, listen)
    out = v
    if talk_guidance != 1.0:
        v0 = bidirectional_v(dit, reference, x_t, sigma, torch.zeros_like(talk), listen)
        out = out + (talk_guidance - 1.0) * (v - v0)
    if listen_guidance != 1.0:
        v0 = bidirectional_v(dit, reference, x_t, sigma, talk, torch.zeros_like(listen))
        out = out + (listen_guidance - 1.0) * (v - v0)
    return out


def bidirectional_x0(dit, reference, x_t, sigma, talk, listen) -> torch.Tensor:
    v = bidirectional_v(dit, reference, x_t, sigma, talk, listen)
    return x_t - sigma.view(-1, 1, 1, 1, 1) * v


def student_forward(
    dit: WanDiT,
    stream: StreamConfig,
    reference: torch.Tensor,
    context: torch.Tensor,
    context_sigma: float,
    query: torch.Tensor,
    query_sigma: torch.Tensor,
    talk: torch.Tensor,
    listen: torch.Tensor,
    offset: int = 0,
) -> torch.Tensor:
    """The block-causal student on a whole clip in one forward (teacher forcing).

    context [B, C, nC, h, w]: what the cache would hold for each chunk (the noisy update: the
    chunk at the last step's noise level `context_sigma`); query [B, C, nC, h, w] at per-frame
    noise levels query_sigma [B, nC] (one level per chunk). Returns v for the query frames.
    Attention and positions are `teacher_forcing_layout`: what streaming computes.
    """
    b, _, n_frames, h, w = query.shape
    n_chunks = n_frames // stream.chunk_frames
    mask, positions = teacher_forcing_layout(n_chunks, stream, offset)
    cfg = dit.config
    _, ph, pw = cfg.patch_size
    attention = FrameMaskAttention(
        mask, positions, h // ph, w // pw, cfg.head_dim, cfg.rope_theta, query.device
    )
    t = torch.cat(
        [
            torch.zeros(b, 1),
            torch.full((b, n_frames), context_sigma * TIMESTEP_SCALE),
            query_sigma * TIMESTEP_SCALE,
        ],
        dim=1,
    )
    x = torch.cat([reference, context, query], dim=2)
    audio_t, audio_l = torch.cat([talk, talk], 1), torch.cat([listen, listen], 1)
    v = dit(x, t, talk_audio=audio_t, listen_audio=audio_l, attention=attention)
    return v[:, :, 1 + n_frames :]


def latent_data(cfg: TrainConfig, vae_folder: str | Path):
    """The latent cache of cfg.data (built on first use with the VAE of `vae_folder` and the
    audio window of the DiT the stage trains)."""
    from streamavatar_cli.audio import load_feature_extractor
    from streamavatar_cli.train.data import latent_cache

    if not cfg.data.cache:
        raise ValueError("[data] cache: give a folder for the latent cache")
    config = model_folder_config(vae_folder)
    _, vae = load_trained_vae(vae_folder)
    extractor = load_feature_extractor(config.audio)
    window = base_config(cfg).dit.audio_frames
    return latent_cache(cfg.data, vae, extractor, Path(cfg.data.cache), window)


def stack_noise(shape: tuple[int, ...], gens: list[torch.Generator]) -> torch.Tensor:
    """One Gaussian draw of `shape` per sample generator, stacked on a new batch dimension."""
    return torch.stack([torch.randn(shape, generator=g) for g in gens])


def stack_uniform(gens: list[torch.Generator]) -> torch.Tensor:
    return torch.stack([torch.rand((), generator=g) for g in gens])


class StudentStage:
    """What ode-init, distill and refine share: the model config they write (DiT and stream
    settings inherited from the teacher), the latent cache, and the export of the student."""

    description = ""

    def __init__(self, cfg: TrainConfig, world) -> None:
        if not cfg.model.teacher:
            raise ValueError(f"{cfg.stage} needs [model] teacher (the teacher stage's folder)")
        self.cfg, self.world, self.opts = cfg, world, cfg.stage_options
        self.model_config = base_config(cfg)
        self.stream = self.model_config.stream
        self.vae_folder = cfg.model.vae_from or cfg.model.teacher
        self.data = latent_data(cfg, self.vae_folder)

    def export_student(self, folder: Path, dit: WanDiT) -> None:
        _, vae = load_trained_vae(self.vae_folder)
        write_model(folder, self.model_config, dit, vae, "student", self.description)

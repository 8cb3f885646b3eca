"""Stage 1, `teacher`: the bidirectional audio-conditioned model, by flow matching.

The reference latent is frame 0, clean, at t = 0 (Wan TI2V's image conditioning); the clip's
frames are noised to one sigma per sample; masked talk/listen features enter through the two
audio modules; the prompt is the fixed one (`prompt_context`: umT5 for the 5B path, zeros for
small configs, where the text embedding's biases make it a learned constant). The audio is
never dropped unless asked: `audio_dropout` zeroes both streams of a sample, `talk_dropout` and
`listen_dropout` one each, so that the guidance of later stages (`common.guided_v`) contrasts
with an input the teacher was trained on.
"""

from __future__ import annotations

from pathlib import Path

import torch

from streamavatar_cli.models import WanDiT, load_dit
from streamavatar_cli.models.dit import is_audio_param
from streamavatar_cli.train.common import (
    base_config,
    bidirectional_v,
    latent_data,
    stack_noise,
    stack_uniform,
    write_model,
)
from streamavatar_cli.train.config import TeacherStage as TeacherOptions
from streamavatar_cli.train.config import TrainConfig
from streamavatar_cli.train.loop import SampleRNG, World, optimizer_step
from streamavatar_cli.train.losses import (
    flow_matching_loss,
    latent_loss_weights,
    shifted_sigma,
    temporal_change_l1,
)
from streamavatar_cli.train.prompt import find_text_encoder, prompt_context


def make_optimizer(
    module: torch.nn.Module, cfg: TrainConfig, lr: float | None = None, audio_lr_scale: float = 1.0
):
    """AdamW over the trainable parameters; with `audio_lr_scale` != 1 the audio modules get
    their own group at that multiple of lr (one group otherwise, as checkpoints expect)."""
    o = cfg.optim
    lr = lr or o.lr
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    groups = [{"params": [p for _, p in named], "lr": lr}]
    if audio_lr_scale != 1.0:
        groups = [
            {"params": [p for n, p in named if not is_audio_param(n)], "lr": lr},
            {"params": [p for n, p in named if is_audio_param(n)], "lr": lr * audio_lr_scale},
        ]
    return torch.optim.AdamW(groups, lr=lr, betas=o.betas, weight_decay=o.weight_decay)


def drop_audio(
    talk: torch.Tensor, listen: torch.Tensor, gens: list[torch.Generator], opts: TeacherOptions
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero each sample's audio streams with the configured probabilities (one draw per sample
    and kind, from its own generator, so a sample's dropout does not depend on its batch)."""
    for p, which in ((opts.audio_dropout, "both"), (opts.talk_dropout, "talk"),
                     (opts.listen_dropout, "listen")):  # fmt: skip
        if p <= 0:
            continue
        keep = (stack_uniform(gens) >= p).float().view(-1, *[1] * (talk.dim() - 1))
        if which != "listen":
            talk = talk * keep
        if which != "talk":
            listen = listen * keep
    return talk, listen


def init_teacher(cfg: TrainConfig) -> WanDiT:
    """From a base Wan checkpoint (audio modules zero-init: the base model's output at step 0)
    or, for small configs, from scratch with the run's seed."""
    config = base_config(cfg)
    if cfg.model.init:
        dit = load_dit(Path(cfg.model.init), config=config.dit)
    else:
        torch.manual_seed(cfg.run.seed)
        dit = WanDiT(config.dit)
    has_prompt = bool(cfg.model.init) and dit.load_report.prompt_context
    encoder = text_encoder_folder(cfg, has_prompt)
    if encoder is not None:
        context = prompt_context(
            encoder, config.dit.text_len, config.dit.text_dim, cfg.stage_options.prompt
        )
        dit.prompt_context.copy_(context)
    dit.gradient_checkpointing = cfg.run.grad_checkpointing
    return dit.train().requires_grad_(True)


def text_encoder_folder(cfg: TrainConfig, has_prompt: bool) -> Path | None:
    """The folder to embed the fixed prompt from, or None to keep the DiT's prompt_context.

    A base Wan checkpoint carries no prompt; without its umT5 the teacher would be trained on
    an all-zero text context the base model never saw, so "auto" insists on finding one there.
    """
    choice = cfg.stage_options.text_encoder
    if choice == "none":
        return None
    if choice != "auto":
        return Path(choice)
    if not cfg.model.init or has_prompt:
        return None
    folder = Path(cfg.model.init)
    if find_text_encoder(folder) is None:
        raise ValueError(
            f"{folder} has no umT5 text encoder to embed the fixed prompt: download the base "
            'model with --with-text-encoder, or set [teacher] text_encoder (a folder or "none")'
        )
    return folder


class TeacherStage:
    def __init__(self, cfg: TrainConfig, world: World):
        self.cfg, self.world = cfg, world
        self.opts = cfg.stage_options
        if not cfg.model.vae_from:
            raise ValueError("[model] vae_from: give the vae stage's output folder")
        self.model_config = base_config(cfg)
        self.data = latent_data(cfg, cfg.model.vae_from)
        self.n_samples = len(self.data)
        self.dit = init_teacher(cfg)
        self.modules = {"dit": self.dit}
        self.optimizers = {
            "dit": make_optimizer(self.dit, cfg, audio_lr_scale=self.opts.audio_lr_scale)
        }

    def loss(self, indices: list[int], rng: SampleRNG) -> torch.Tensor:
        lat = self.data["latents"][indices]
        talk, listen = self.data["talk"][indices], self.data["listen"][indices]
        ref, x0 = lat[:, :, :1], lat[:, :, 1:]
        gens = [rng(i) for i in indices]
        noise = stack_noise(x0.shape[1:], gens)
        sigma = shifted_sigma(stack_uniform(gens), self.opts.t_shift)
        o = self.opts
        weights = latent_loss_weights(  # before the dropout: listen says what the frame is
            x0, o.motion_weight, o.motion_tau, o.region_box, o.region_weight,
            listen, o.listen_weight, o.listen_region_box, o.listen_region_weight,
        )  # fmt: skip
        talk, listen = drop_audio(talk, listen, gens, self.opts)
        s = sigma.view(-1, 1, 1, 1, 1)
        x_t = (1 - s) * x0 + s * noise
        v = bidirectional_v(self.dit, ref, x_t, sigma, talk, listen)
        loss = flow_matching_loss(v, noise, x0, weights)
        if o.temporal_weight > 0:
            loss = loss + o.temporal_weight * temporal_change_l1(v.float(), noise - x0, weights)
        return loss

    def step(self, step: int, indices: list[int], rng: SampleRNG) -> dict[str, float]:
        loss = self.loss(indices, rng)
        optimizer_step(self.optimizers["dit"], self.dit, loss, self.world, self.cfg.optim.grad_clip)
        return {"loss": loss.item()}

    def export(self, folder: Path) -> None:
        from streamavatar_cli.train.common import load_trained_vae

        _, vae = load_trained_vae(self.cfg.model.vae_from)
        write_model(
            folder, self.model_config, self.dit, vae, "teacher",
            "bidirectional audio-conditioned teacher (streamavatar train teacher)",
        )  # fmt: skip

"""Stage 5, `refine`: adversarial refinement on real clips (paper section 3.2, Stage 2).

Discriminator: a copy of the teacher backbone with N_Q = 3 Q-Formers, each reading one
intermediate block (evenly spread unless `query_layers` says). A Q-Former's learnable queries
cross-attend to one frame's tokens, so every frame gets a feature per Q-Former; the features
are concatenated and projected. Two heads:
- local realism: a linear map of each frame's feature -> one logit per frame;
- global consistency: the reference frame's feature cross-attends to every frame's feature
  -> one logit per clip (penalises drifting away from the reference identity).
Both read latents noised to a small random sigma (as the backbone was trained to read noisy
inputs). Loss: relativistic pairing of a real clip with a generated one on the same reference
and audio, per head; R1 and R2 approximated by input perturbation (Seaweed-APT style):
|D(x + s e) - D(x)|^2 / s^2 on real (R1) and generated (R2) inputs. Generator: the student
rolled out with `StreamingGenerator` as in `distill` (last step of each chunk carries gradient).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from streamavatar_cli.models import WanDiT
from streamavatar_cli.models.attention import GlobalAttention
from streamavatar_cli.pipeline.sampler import TIMESTEP_SCALE
from streamavatar_cli.train.common import (
    StudentStage,
    load_trained_dit,
    stack_noise,
    stack_uniform,
)
from streamavatar_cli.train.config import TrainConfig
from streamavatar_cli.train.distill import rollout
from streamavatar_cli.train.loop import SampleRNG, World, optimizer_step
from streamavatar_cli.train.losses import (
    box_frame_weights,
    listen_share,
    relativistic_d_loss,
    relativistic_g_loss,
    weighted_mean,
)
from streamavatar_cli.train.teacher import make_optimizer

D_SIGMA_MAX = 0.3
QUERIES_PER_FRAME = 4


class QFormer(nn.Module):
    """Learnable queries cross-attending to each frame's tokens: [B, F*S, D] -> [B, F, D]."""

    def __init__(self, dim: int, heads: int, n_queries: int = QUERIES_PER_FRAME):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(n_queries, dim) * dim**-0.5)
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, tokens: torch.Tensor, n_frames: int) -> torch.Tensor:
        b, length, d = tokens.shape
        per_frame = self.norm(tokens.float()).reshape(b * n_frames, length // n_frames, d)
        q = self.queries.unsqueeze(0).expand(b * n_frames, -1, -1)
        out, _ = self.attn(q, per_frame, per_frame, need_weights=False)
        return out.mean(1).view(b, n_frames, d)


def spread_layers(n_layers: int, n: int) -> tuple[int, ...]:
    """`n` intermediate blocks, evenly spaced, never the first or the last."""
    return tuple(sorted({max(0, round((k + 1) * n_layers / (n + 1)) - 1) for k in range(n)}))


class Discriminator(nn.Module):
    def __init__(self, backbone: WanDiT, n_queries: int = 3, layers: tuple[int, ...] = ()):
        super().__init__()
        cfg = backbone.config
        self.backbone = backbone
        self.layers = layers or spread_layers(cfg.num_layers, n_queries)
        self.qformers = nn.ModuleList(QFormer(cfg.dim, cfg.num_heads) for _ in self.layers)
        self.merge = nn.Linear(cfg.dim * len(self.layers), cfg.dim)
        self.local = nn.Linear(cfg.dim, 1)
        self.consistency = nn.MultiheadAttention(cfg.dim, cfg.num_heads, batch_first=True)
        self.global_head = nn.Linear(cfg.dim, 1)

    def forward(self, latents, sigma, talk, listen) -> tuple[torch.Tensor, torch.Tensor]:
        """latents [B, C, 1 + F, h, w] (reference first, clean); -> (local [B, F], global [B])."""
        dit = self.backbone
        b, _, n, _, _ = latents.shape
        t = torch.cat([torch.zeros(b, 1), (sigma * TIMESTEP_SCALE)[:, None].expand(b, n - 1)], 1)
        grid = dit.grid(latents)
        cfg = dit.config
        attention = GlobalAttention.for_grid(
            range(n), grid[1], grid[2], cfg.head_dim, cfg.rope_theta, latents.device
        )
        _, e0 = dit.time_embed(t)
        talk_t, listen_t = dit.audio_tokens(talk, listen)
        tapped = dit.block_tokens(
            dit.patchify(latents), e0, dit.text_kv(None, b), talk_t, listen_t, attention,
            taps=self.layers,
        )[:-1]  # fmt: skip
        feats = torch.cat([q(x, n) for q, x in zip(self.qformers, tapped, strict=True)], dim=-1)
        feats = self.merge(feats)  # [B, 1 + F, D]
        local = self.local(feats[:, 1:]).squeeze(-1)
        pooled, _ = self.consistency(feats[:, :1], feats, feats, need_weights=False)
        return local, self.global_head(pooled[:, 0]).squeeze(-1)


class RefineStage(StudentStage):
    description = "streaming student after adversarial refinement (streamavatar train refine)"

    def __init__(self, cfg: TrainConfig, world: World):
        if not (cfg.model.teacher and cfg.model.init):
            raise ValueError("refine needs [model] teacher and [model] init (a student folder)")
        o = cfg.stage_options
        if o.adversarial_weight <= 0 and o.regression_weight <= 0:
            raise ValueError("[refine] adversarial_weight and regression_weight are both 0: "
                             "the student would learn nothing; set one of them > 0")  # fmt: skip
        super().__init__(cfg, world)
        self.n_samples = len(self.data)
        self.student = load_trained_dit(cfg.model.init)
        self.anchor = (  # the student as it started, for `anchor_weight`
            load_trained_dit(cfg.model.init, trainable=False)
            if self.opts.anchor_weight > 0
            else None
        )
        self.student.gradient_checkpointing = cfg.run.grad_checkpointing
        self.modules = {"student": self.student}
        self.optimizers = {"student": make_optimizer(self.student, cfg)}
        if self.opts.adversarial_weight > 0:  # no discriminator is built for the regression alone
            self.disc = Discriminator(  # its backbone is a trainable copy of the teacher
                load_trained_dit(cfg.model.teacher), self.opts.n_queries, self.opts.query_layers
            )
            self.disc.backbone.gradient_checkpointing = cfg.run.grad_checkpointing
            self.modules["disc"] = self.disc
            self.optimizers["disc"] = make_optimizer(self.disc, cfg, lr=self.opts.d_lr)

    def scores(self, x, ref, sigma, noise, talk, listen):
        s = sigma.view(-1, 1, 1, 1, 1)
        return self.disc(torch.cat([ref, (1 - s) * x + s * noise], 2), sigma, talk, listen)

    def step(self, step: int, indices: list[int], rng: SampleRNG) -> dict[str, float]:
        lat = self.data["latents"][indices]
        talk, listen = self.data["talk"][indices], self.data["listen"][indices]
        ref, real = lat[:, :, :1], lat[:, :, 1:]
        seeds = [int(torch.randint(0, 2**62, (1,), generator=rng(i, 2))) for i in indices]
        fake = self.rollouts(self.student, ref, talk, listen, seeds, grad=True)
        n = fake.shape[2]
        real, talk, listen = real[:, :, :n], talk[:, :n], listen[:, :n]
        gens = [rng(i, 5) for i in indices]
        sigma = D_SIGMA_MAX * stack_uniform(gens)
        noise = stack_noise(real.shape[1:], gens)
        inputs = (ref, sigma, noise, talk, listen)
        o = self.opts
        logs: dict[str, float] = {}

        # generator: make generated clips score above real ones (D frozen, its input is not),
        # plus the optional regression to the real clip
        total = fake.new_zeros(())
        if o.adversarial_weight > 0:
            self.disc.requires_grad_(False)
            r_local, r_global = self.scores(real, *inputs)
            f_local, f_global = self.scores(fake, *inputs)
            g_loss = relativistic_g_loss(r_local, f_local) + relativistic_g_loss(r_global, f_global)
            self.disc.requires_grad_(True)
            total = total + o.adversarial_weight * g_loss
            logs["g_loss"] = g_loss.item()
        # the regression: the box on talk frames, where the audio fixes the mouth; the anchor:
        # everywhere else (everywhere when there is no regression)
        regressed = fake.new_zeros(())
        if o.regression_weight > 0:
            talk_share = 1 - listen_share(listen.to(fake.device))
            regressed = box_frame_weights(fake.shape, o.regression_box, talk_share)
            error = (fake.float() - real.float()).abs()
            regression = weighted_mean(error if o.regression_l1 else error.pow(2), regressed)
            total = total + o.regression_weight * regression
            logs["regression"] = regression.item()
        if o.anchor_weight > 0:
            with torch.no_grad():
                anchor = self.rollouts(self.anchor, ref, talk, listen, seeds, grad=False)
            kept = weighted_mean((fake.float() - anchor.float()).pow(2), 1 - regressed)
            total = total + o.anchor_weight * kept
            logs["anchor"] = kept.item()
        optimizer_step(
            self.optimizers["student"], self.student, total, self.world, self.cfg.optim.grad_clip
        )
        if o.adversarial_weight > 0:
            logs.update(self.discriminator_step(real, fake.detach(), inputs, indices, rng))
        return {"loss": total.item(), **logs}

    def rollouts(self, dit, ref, talk, listen, seeds: list[int], grad: bool) -> torch.Tensor:
        """`dit`'s stream of each sample (`rollout`), from that sample's seed."""
        return torch.cat(
            [
                rollout(
                    dit,
                    self.stream,
                    ref[b : b + 1],
                    talk[b : b + 1],
                    listen[b : b + 1],
                    seed=seed,
                    n_chunks=self.opts.rollout_chunks,
                    grad=grad,
                )
                for b, seed in enumerate(seeds)
            ]
        )

    def discriminator_step(self, real, fake, inputs, indices, rng) -> dict[str, float]:
        """Relativistic pairing + approximate R1 (real) and R2 (generated)."""
        r_local, r_global = self.scores(real, *inputs)
        f_local, f_global = self.scores(fake, *inputs)
        d_loss = relativistic_d_loss(r_local, f_local) + relativistic_d_loss(r_global, f_global)
        penalty = sum(
            self.perturbation_penalty(x, inputs, logits, eps)
            for x, logits, eps in (
                (real, (r_local, r_global), stack_noise(real.shape[1:], [rng(i, 6) for i in indices])),
                (fake, (f_local, f_global), stack_noise(real.shape[1:], [rng(i, 7) for i in indices])),
            )
        )  # fmt: skip
        total = d_loss + self.opts.r1_weight * penalty
        optimizer_step(
            self.optimizers["disc"], self.disc, total, self.world, self.cfg.optim.grad_clip
        )
        return {"d_loss": d_loss.item(), "r1r2": penalty.item()}

    def perturbation_penalty(self, x, inputs, logits, eps):
        """|D(x + s eps) - D(x)|^2 / s^2 for both heads: R1 (real x) or R2 (generated x)."""
        s = self.opts.r1_sigma
        p_local, p_global = self.scores(x + s * eps, *inputs)
        local, glob = logits
        return ((p_local - local).pow(2).mean() + (p_global - glob).pow(2).mean()) / s**2

    def export(self, folder: Path) -> None:
        self.export_student(folder, self.student)

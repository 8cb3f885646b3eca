"""Stage 3, `ode-init`: the block-causal student regresses the teacher's x0 from x_t.

The student starts as a copy of the teacher. Per sample, each chunk gets one of the student's
noise levels at random and its input is the teacher's trajectory at that level; the cache is
simulated by context copies of the chunks at the last level, renoised from the teacher's x0
with fresh noise (what the `noisy` cache update stores at inference). Attention is
block-causal with the sink and window of the stream config (`teacher_forcing_layout`), and the
RAPR positions are those of a stream `offset` latent frames further on, offset drawn per step
in [0, rapr_offset_max], so 4-chunk clips see the positions of long streams.
"""

from __future__ import annotations

from pathlib import Path

import torch

from streamavatar_cli.train.common import (
    StudentStage,
    load_trained_dit,
    stack_noise,
    student_forward,
)
from streamavatar_cli.train.config import TrainConfig
from streamavatar_cli.train.data import TensorShards
from streamavatar_cli.train.loop import SampleRNG, World, optimizer_step
from streamavatar_cli.train.losses import latent_loss_weights, weighted_mean
from streamavatar_cli.train.teacher import make_optimizer


class OdeInitStage(StudentStage):
    description = "block-causal student after ODE initialisation (streamavatar train ode-init)"

    def __init__(self, cfg: TrainConfig, world: World):
        if not (cfg.model.teacher and cfg.stage_options.pairs):
            raise ValueError("ode-init needs [model] teacher and [ode_init] pairs")
        super().__init__(cfg, world)
        self.pairs = TensorShards(Path(self.opts.pairs))
        self.n_samples = len(self.pairs)
        self.dit = load_trained_dit(cfg.model.init or cfg.model.teacher)
        self.dit.gradient_checkpointing = cfg.run.grad_checkpointing
        self.modules = {"dit": self.dit}
        self.optimizers = {"dit": make_optimizer(self.dit, cfg)}

    def batch(self, indices: list[int], rng: SampleRNG):
        src = self.pairs["source"][indices]
        lat = self.data["latents"][src]
        xs, x0 = self.pairs["x"][indices], self.pairs["x0"][indices]
        sigmas = torch.tensor(self.stream.sigmas())
        c = self.stream.chunk_frames
        n_chunks = x0.shape[2] // c
        levels = torch.stack(
            [torch.randint(0, len(sigmas), (n_chunks,), generator=rng(i)) for i in indices]
        )  # [B, chunks]
        frame_levels = levels.repeat_interleave(c, dim=1)  # [B, F]
        b, _, ch, f, h, w = xs.shape
        pick = frame_levels[:, None, None, :, None, None].expand(b, 1, ch, f, h, w)
        query = xs.gather(1, pick).squeeze(1)  # [B, C, F, h, w]: frame f at its chunk's level
        noise = stack_noise(x0.shape[1:], [rng(i, 1) for i in indices])
        last = float(sigmas[-1])
        context = (1 - last) * x0 + last * noise
        offset = int(torch.randint(0, self.opts.rapr_offset_max + 1, (1,), generator=rng(-1)))
        return lat[:, :, :1], context, last, query, sigmas[frame_levels], x0, src, offset

    def loss(self, indices: list[int], rng: SampleRNG) -> torch.Tensor:
        ref, context, last, query, q_sigma, x0, src, offset = self.batch(indices, rng)
        v = student_forward(
            self.dit, self.stream, ref, context, last, query, q_sigma,
            self.data["talk"][src], self.data["listen"][src], offset,
        )  # fmt: skip
        pred = query - q_sigma[:, None, :, None, None] * v
        o = self.opts
        weights = latent_loss_weights(
            x0, o.motion_weight, o.motion_tau, o.region_box, o.region_weight,
            self.data["listen"][src], o.listen_weight, o.listen_region_box,
            o.listen_region_weight,
        )  # fmt: skip
        return weighted_mean((pred - x0).pow(2), weights)

    def step(self, step: int, indices: list[int], rng: SampleRNG) -> dict[str, float]:
        loss = self.loss(indices, rng)
        optimizer_step(self.optimizers["dit"], self.dit, loss, self.world, self.cfg.optim.grad_clip)
        return {"loss": loss.item()}

    def export(self, folder: Path) -> None:
        self.export_student(folder, self.dit)

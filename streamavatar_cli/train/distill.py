"""Stage 4, `distill`: Score identity Distillation (SiD) with student forcing.

Generator: the ODE-initialised student, rolled out chunk by chunk from the reference through
the real KV cache with the noisy cache update, by the very `StreamingGenerator` inference uses
(`grad_last_step`): every chunk's last denoising step carries gradient, its earlier steps and
the cache do not. Real score: the frozen teacher, with the ode-pairs stage's guidance on the
audio features (`[distill] talk_guidance`, `listen_guidance`, `common.guided_v`), so distillation pulls toward
the same guided distribution the student was initialised on. Fake score: initialised from the teacher and
trained by denoising score matching (flow matching) on the generator's samples. Generator
loss: `sid_generator_loss` (alpha = 1.2 by default) at sigma = shifted(u), u ~ U(0.02, t_max).
"""

from __future__ import annotations

from pathlib import Path

import torch

from streamavatar_cli.pipeline.stream import StreamingGenerator
from streamavatar_cli.train.common import (
    StudentStage,
    bidirectional_v,
    guided_v,
    load_trained_dit,
    stack_noise,
    stack_uniform,
)
from streamavatar_cli.train.config import TrainConfig
from streamavatar_cli.train.loop import SampleRNG, World, optimizer_step
from streamavatar_cli.train.losses import flow_matching_loss, shifted_sigma, sid_generator_loss
from streamavatar_cli.train.teacher import make_optimizer

SIGMA_SHIFT = 3.0
SIGMA_MIN_U = 0.02


def rollout(
    dit,
    stream,
    reference: torch.Tensor,
    talk: torch.Tensor,
    listen: torch.Tensor,
    seed: int,
    n_chunks: int,
    grad: bool,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """The student's own stream of `n_chunks` chunks: latents [1, C, n_chunks * chunk, h, w].
    `noise` [1, C, n_chunks * chunk, h, w]: the chunks' starting noise (default: seeded draws)."""
    gen = StreamingGenerator(dit, stream.replace(seed=seed), grad_last_step=grad)
    with torch.no_grad():
        gen.start(reference)
    c = stream.chunk_frames
    chunks = []
    for i in range(n_chunks):
        part = slice(i * c, (i + 1) * c)
        start = noise[:, :, part] if noise is not None else None
        chunks.append(gen.next_chunk(talk[:, part], listen[:, part], noise=start))
    return torch.cat(chunks, dim=2)


class DistillStage(StudentStage):
    description = (
        "streaming student distilled with SiD and student forcing (streamavatar train distill)"
    )

    def __init__(self, cfg: TrainConfig, world: World):
        if not (cfg.model.teacher and cfg.model.init):
            raise ValueError("distill needs [model] teacher and [model] init (the ode-init output)")
        super().__init__(cfg, world)
        self.n_samples = len(self.data)
        self.student = load_trained_dit(cfg.model.init)
        self.teacher = load_trained_dit(cfg.model.teacher, trainable=False)
        self.fake = load_trained_dit(cfg.model.teacher)
        for m in (self.student, self.fake):
            m.gradient_checkpointing = cfg.run.grad_checkpointing
        self.modules = {"student": self.student, "fake": self.fake}
        self.optimizers = {
            "student": make_optimizer(self.student, cfg),
            "fake": make_optimizer(self.fake, cfg, lr=self.opts.fake_lr),
        }

    def generate(self, indices: list[int], rng: SampleRNG, grad: bool) -> torch.Tensor:
        lat = self.data["latents"][indices]
        talk, listen = self.data["talk"][indices], self.data["listen"][indices]
        outs = []
        for b, i in enumerate(indices):
            seed = int(torch.randint(0, 2**62, (1,), generator=rng(i, 2)))
            outs.append(
                rollout(
                    self.student,
                    self.stream,
                    lat[b : b + 1, :, :1],
                    talk[b : b + 1],
                    listen[b : b + 1],
                    seed,
                    self.opts.rollout_chunks,
                    grad,
                )  # fmt: skip
            )
        return torch.cat(outs)

    def audio(self, indices: list[int], n_frames: int):
        return self.data["talk"][indices][:, :n_frames], self.data["listen"][indices][:, :n_frames]

    def noised(self, x: torch.Tensor, indices: list[int], rng: SampleRNG, salt: int):
        gens = [rng(i, salt) for i in indices]
        u = SIGMA_MIN_U + (self.opts.t_max - SIGMA_MIN_U) * stack_uniform(gens)
        sigma = shifted_sigma(u, SIGMA_SHIFT)
        noise = stack_noise(x.shape[1:], gens)
        s = sigma.view(-1, 1, 1, 1, 1)
        return (1 - s) * x + s * noise, sigma, noise

    def generator_step(self, x_g: torch.Tensor, indices: list[int], rng: SampleRNG) -> float:
        """SiD update of the student; both score networks are frozen, their inputs are not."""
        ref = self.data["latents"][indices][:, :, :1]
        talk, listen = self.audio(indices, x_g.shape[2])
        x_t, sigma, _ = self.noised(x_g, indices, rng, 3)
        s = sigma.view(-1, 1, 1, 1, 1)
        self.fake.requires_grad_(False)
        real_v = guided_v(
            self.teacher, ref, x_t, sigma, talk, listen,
            self.opts.talk_guidance, self.opts.listen_guidance,
        )  # fmt: skip
        real_x0 = x_t - s * real_v
        fake_x0 = x_t - s * bidirectional_v(self.fake, ref, x_t, sigma, talk, listen)
        self.fake.requires_grad_(True)
        loss = sid_generator_loss(x_g, real_x0, fake_x0, self.opts.alpha)
        self._update("student", self.student, loss)
        return loss.item()

    def fake_step(self, x_g: torch.Tensor, indices: list[int], rng: SampleRNG, salt: int) -> float:
        """Denoising score matching of the fake score on the generator's (detached) samples."""
        ref = self.data["latents"][indices][:, :, :1]
        talk, listen = self.audio(indices, x_g.shape[2])
        x_t, sigma, noise = self.noised(x_g, indices, rng, salt)
        v = bidirectional_v(self.fake, ref, x_t, sigma, talk, listen)
        loss = flow_matching_loss(v, noise, x_g)
        self._update("fake", self.fake, loss)
        return loss.item()

    def _update(self, name: str, module: torch.nn.Module, loss: torch.Tensor) -> None:
        optimizer_step(self.optimizers[name], module, loss, self.world, self.cfg.optim.grad_clip)

    def step(self, step: int, indices: list[int], rng: SampleRNG) -> dict[str, float]:
        """One rollout per step: the generator update uses it with gradient, then the fake
        score learns from the same samples, detached."""
        x_g = self.generate(indices, rng, grad=True)
        gen = self.generator_step(x_g, indices, rng)
        x_g = x_g.detach()
        fake = [self.fake_step(x_g, indices, rng, 10 + k) for k in range(self.opts.fake_updates)]
        return {"loss": gen, "fake_loss": sum(fake) / len(fake)}

    def export(self, folder: Path) -> None:
        self.export_student(folder, self.student)

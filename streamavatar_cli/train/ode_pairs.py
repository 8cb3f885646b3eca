"""Stage 2, `ode-pairs`: the teacher's multi-step sampler on training inputs, recorded.

Euler steps of the probability-flow ODE dx/dsigma = v from pure noise (sigma = 1) to x0, on a
shifted grid of `sampler_steps` steps with the student's noise levels inserted, so x is recorded
exactly at each student level. `talk_guidance` / `listen_guidance` > 1 guide the talk / listen
features (`guided_v`): the student learns the guided trajectories and renders them at one forward per step. Output:
safetensors shards with `x` [N, S, C, F, h, w] (x at the S student levels, noisiest first),
`x0` [N, C, F, h, w], the cache row each pair came from (`source`), and `index.json`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from streamavatar_cli.train.common import (
    base_config,
    guided_v,
    latent_data,
    load_trained_dit,
    stack_noise,
)
from streamavatar_cli.train.config import TrainConfig
from streamavatar_cli.train.data import ShardWriter, TensorShards
from streamavatar_cli.train.loop import SampleRNG, World, forward_precision
from streamavatar_cli.train.losses import shifted_sigma


def sampler_grid(steps: int, shift: float, keep: tuple[float, ...]) -> list[float]:
    """Decreasing noise levels from 1 to 0: the shifted uniform grid plus the levels in `keep`."""
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    grid = {round(float(s), 9) for s in shifted_sigma(u, shift)}
    grid |= {round(float(s), 9) for s in keep}
    return sorted(grid, reverse=True)


@torch.no_grad()
def teacher_trajectory(
    dit,
    reference,
    noise,
    talk,
    listen,
    grid: list[float],
    record: tuple[float, ...],
    talk_guidance: float = 1.0,
    listen_guidance: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run Euler from `noise` over `grid`; -> (x at each `record` level [B, S, ...], x0)."""
    x = noise
    wanted = [round(s, 9) for s in record]
    seen: dict[float, torch.Tensor] = {}
    for a, b in zip(grid[:-1], grid[1:], strict=True):
        if a in wanted:
            seen[a] = x
        sigma = torch.full((x.shape[0],), a)
        x = x + (b - a) * guided_v(
            dit, reference, x, sigma, talk, listen, talk_guidance, listen_guidance
        )
    return torch.stack([seen[s] for s in wanted], dim=1), x


class OdePairsJob:
    """Not an optimisation: `run` fills shards batch by batch. A finished set (index.json
    written last) is reused as is; an unfinished one is generated again (minutes at the tiny
    scale; deterministic, so the result is the same)."""

    def __init__(self, cfg: TrainConfig, world: World):
        self.cfg, self.world, self.opts = cfg, world, cfg.stage_options
        if not cfg.model.teacher:
            raise ValueError("[model] teacher: give the teacher stage's output folder")
        self.stream = base_config(cfg).stream
        self.data = latent_data(cfg, cfg.model.vae_from or cfg.model.teacher)
        self.teacher = load_trained_dit(cfg.model.teacher, trainable=False)

    def run(self, out: Path, on_step=None) -> int:
        if TensorShards.exists(out):
            return TensorShards(out).count
        record = self.stream.sigmas()
        grid = sampler_grid(self.opts.sampler_steps, self.opts.sampler_shift, record)
        n = min(self.opts.samples, len(self.data))
        meta = {"record_sigmas": list(record), "grid_steps": len(grid) - 1,
                "talk_guidance": self.opts.talk_guidance,
                "listen_guidance": self.opts.listen_guidance}  # fmt: skip
        writer = ShardWriter(out, self.opts.shard_size, meta)
        batch = self.cfg.optim.batch_size
        for start in range(0, n, batch):
            idx = list(range(start, min(n, start + batch)))
            lat = self.data["latents"][idx]
            rng = SampleRNG(self.cfg.run.seed, 0)
            noise = stack_noise(lat[0, :, 1:].shape, [rng(i) for i in idx])
            with forward_precision(self.cfg.run.dtype, self.teacher.device):
                xs, x0 = teacher_trajectory(
                    self.teacher, lat[:, :, :1], noise, self.data["talk"][idx],
                    self.data["listen"][idx], grid, record, self.opts.talk_guidance,
                    self.opts.listen_guidance,
                )  # fmt: skip
            writer.add(x=xs.float(), x0=x0.float(), source=torch.tensor(idx))
            if on_step is not None:
                on_step(idx[-1] + 1, n, {"x0_std": float(x0.std())})
        writer.close()
        return writer.count

"""The loop every stage shares: seeded batches, checkpoints, resume, logs, torch.distributed.

A stage is an object with `modules` (name -> module, checkpointed), `optimizers` (name ->
optimizer, checkpointed), `step(step, indices, rng) -> dict of losses` (forward, backward and
optimiser steps for the samples `indices`), `n_samples` and `export(folder)`.

Determinism: the global batch of step s is a slice of a seeded permutation of the samples, and
every random draw of sample i at step s comes from a generator seeded by (seed, s, i). So a run
stopped and resumed gives the same next losses, and N processes that each take 1/N of the
global batch (and average gradients) follow the same curve as one process.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from streamavatar_cli.train.config import TrainConfig

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
LOG_FILE = "log.jsonl"


class Stage(Protocol):
    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    n_samples: int

    def step(self, step: int, indices: list[int], rng: SampleRNG) -> dict[str, float]: ...

    def export(self, folder: Path) -> None: ...


# ---- distributed ------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> World:
    """torch.distributed from torchrun's environment (gloo on CPU, nccl on GPU); else 1 process."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return World(dist.get_rank(), dist.get_world_size())


def average_gradients(modules: list[nn.Module], world: World) -> None:
    """All-reduce the mean of every gradient over the processes (what DDP does, but for any
    number of modules and optimisers per step, which the GAN and SiD stages need)."""
    if world.size == 1:
        return
    for module in modules:
        for p in module.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad /= world.size


def finish_distributed(world: World) -> None:
    """Wait for every process (rank 0 may still be writing the model folder), then tear the
    group down: a process that exits with a live gloo group can abort at interpreter exit."""
    if world.size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    module: nn.Module,
    loss: torch.Tensor,
    world: World,
    grad_clip: float,
) -> None:
    """backward -> gradients averaged over processes -> clipped -> one optimiser step."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(loss.device.type, enabled=False):  # backward follows the forward's casts
        loss.backward()
    average_gradients([module], world)
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(module.parameters(), grad_clip)
    optimizer.step()


def average_scalars(values: dict[str, float], world: World) -> dict[str, float]:
    if world.size == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return {k: float(v) / world.size for k, v in zip(keys, t.tolist(), strict=True)}


# ---- randomness ------------------------------------------------------------------------------


class SampleRNG:
    """Per-(step, sample) generators: the draws for a sample never depend on the process."""

    def __init__(self, seed: int, step: int):
        self.seed, self.step = seed, step

    def __call__(self, index: int, salt: int = 0) -> torch.Generator:
        mixed = (self.seed * 1_000_003 + self.step) * 1_000_033 + index * 7919 + salt
        return torch.Generator().manual_seed(mixed % (2**63))


def batch_indices(seed: int, step: int, n_samples: int, batch: int) -> list[int]:
    """Global batch of `step`: consecutive slices of one seeded permutation per epoch."""
    per_epoch = max(1, n_samples // batch)
    epoch, within = divmod(step, per_epoch)
    order = torch.randperm(n_samples, generator=torch.Generator().manual_seed(seed * 7 + epoch))
    if n_samples >= batch:
        return order[within * batch : (within + 1) * batch].tolist()
    return [int(order[i % n_samples]) for i in range(batch)]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# ---- EMA ---------------------------------------------------------------------------------------


class EMA:
    """Exponential moving average of a module's float parameters (kept on the same device)."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for k, v in module.state_dict().items():
            if v.is_floating_point():
                self.shadow[k].lerp_(v, 1.0 - self.decay)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.shadow = {k: v.clone() for k, v in state.items()}


# ---- checkpoints -------------------------------------------------------------------------------


def save_checkpoint(path: Path, step: int, stage: Stage, ema: EMA | None) -> None:
    """Weights, optimiser and RNG state, written to a temp file and renamed (atomic)."""
    state = {
        "step": step,
        "modules": {k: m.state_dict() for k, m in stage.modules.items()},
        "optimizers": {k: o.state_dict() for k, o in stage.optimizers.items()},
        "ema": ema.state_dict() if ema is not None else None,
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": _numpy_state_to_tensors(np.random.get_state()),
            "python": random.getstate(),
        },
    }
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, stage: Stage, ema: EMA | None) -> int:
    state = torch.load(path, map_location="cpu", weights_only=True)
    for k, m in stage.modules.items():
        m.load_state_dict(state["modules"][k])
    for k, o in stage.optimizers.items():
        o.load_state_dict(state["optimizers"][k])
    if ema is not None and state["ema"] is not None:
        ema.load_state_dict(state["ema"])
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(_numpy_state_from_tensors(state["rng"]["numpy"]))
    random.setstate(_python_state(state["rng"]["python"]))
    return int(state["step"])


# Checkpoints load with weights_only=True (no pickled code: tests/test_integrity.py), so the RNG
# states are stored as tensors and plain tuples.


def _numpy_state_to_tensors(state: tuple) -> tuple:
    name, keys, pos, has_gauss, gauss = state
    return name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)


def _numpy_state_from_tensors(state: tuple) -> tuple:
    name, keys, pos, has_gauss, gauss = state
    return name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss


def _python_state(state) -> tuple:
    version, internal, gauss = state
    return int(version), tuple(int(x) for x in internal), gauss


def lr_factor(step: int, warmup: int, total: int = 0, min_ratio: float = 1.0) -> float:
    """Linear warmup over `warmup` steps, then a cosine from 1 down to `min_ratio` at step
    `total` (min_ratio 1: constant). A decayed lr settles the weights the constant one keeps
    shaking: what the last few hundred steps of a short run are for."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if min_ratio >= 1.0 or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - 1 - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ---- precision ---------------------------------------------------------------------------------


def forward_precision(dtype: str, device: torch.device | str = "cpu") -> torch.autocast:
    """`run.dtype`: "bf16" runs the forward passes and losses under bf16 autocast (matmuls and
    convolutions in bf16, norms, softmax and losses in fp32), while weights, gradients, optimiser
    state and EMA stay fp32: mixed precision. On a CPU with AVX512-BF16 tiny DiT steps take
    13-20 % less time; the tiny VAE's 3-D convolutions gain nothing. "fp32": a no-op."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=dtype == "bf16")


def module_device(modules: dict[str, nn.Module]) -> torch.device:
    first = next(iter(modules.values()))
    return next(first.parameters()).device


# ---- the loop ----------------------------------------------------------------------------------


def run(
    stage: Stage,
    cfg: TrainConfig,
    out: Path,
    *,
    resume: bool = False,
    max_steps: int | None = None,
    ema_module: str | None = None,
    on_step: Callable[[int, int, dict[str, float]], None] | None = None,
    world: World | None = None,
) -> list[dict[str, float]]:
    """Train `stage` to `cfg.optim.steps` (or stop after `max_steps` more), then export.

    Returns the logged records of this invocation. `ema_module` names the module whose EMA
    (cfg.optim.ema > 0) is exported instead of its raw weights.
    """
    world = world or World()
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / CHECKPOINT
    ema = (
        EMA(stage.modules[ema_module], cfg.optim.ema) if ema_module and cfg.optim.ema > 0 else None
    )
    step = 0
    if resume and ckpt.is_file():
        step = load_checkpoint(ckpt, stage, ema)
        log.info("resumed %s at step %d", out, step)
    elif resume:
        log.warning("--resume: no checkpoint in %s, starting from step 0", out)
    total = cfg.optim.steps
    stop = total if max_steps is None else min(total, step + max_steps)
    base_lrs = {k: [g["lr"] for g in o.param_groups] for k, o in stage.optimizers.items()}
    log_path = out / LOG_FILE
    records: list[dict[str, float]] = []
    batch = cfg.optim.batch_size
    if batch % world.size:
        raise ValueError(f"batch_size={batch} must be divisible by the {world.size} processes")
    device = module_device(stage.modules)
    try:
        while step < stop:
            t0 = time.perf_counter()
            for k, o in stage.optimizers.items():
                for g, lr in zip(o.param_groups, base_lrs[k], strict=True):
                    g["lr"] = lr * lr_factor(step, cfg.optim.warmup, total, cfg.optim.min_lr_ratio)
            indices = batch_indices(cfg.run.seed, step, stage.n_samples, batch)
            mine = indices[world.rank :: world.size]
            with forward_precision(cfg.run.dtype, device):
                scalars = stage.step(step, mine, SampleRNG(cfg.run.seed, step))
            losses = average_scalars(scalars, world)
            if ema is not None:
                ema.update(stage.modules[ema_module])
            step += 1
            record = {"step": step, **losses, "step_time": time.perf_counter() - t0}
            records.append(record)
            if world.main:
                if step % cfg.run.log_every == 0 or step == stop:
                    with log_path.open("a", encoding="utf-8") as f:
                        f.write(json.dumps(record) + "\n")
                if step % cfg.run.checkpoint_every == 0:
                    save_checkpoint(ckpt, step, stage, ema)
            if on_step is not None:
                on_step(step, total, losses)
            if not all(math.isfinite(v) for v in losses.values()):
                raise FloatingPointError(f"step {step}: a loss is not finite: {losses}")
    except KeyboardInterrupt:
        if world.main and step > 0:
            save_checkpoint(ckpt, step, stage, ema)
        raise
    if world.main:
        if step > 0:
            save_checkpoint(ckpt, step, stage, ema)
        if step >= total:
            if ema is not None:
                stage.modules[ema_module].load_state_dict(ema.state_dict())
            stage.export(out)
    return records

"""`streamavatar train`: the pipeline that turns a Wan2.2 backbone (or nothing, at small scale)
into a streaming StreamAvatar student. Paper sections 3.1-3.2; ARCHITECTURE section 10.

    vae -> teacher -> ode-pairs -> ode-init -> distill -> refine

Each stage reads a TOML config (`configs/`), writes checkpoints and a JSONL log to its output
folder, resumes with `resume=True`, and ends by writing a model folder (`config.json` +
safetensors) that `open_model` loads: the teacher as `kind: teacher`, students as
`kind: student`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from streamavatar_cli.train.config import STAGES, TrainConfig
from streamavatar_cli.train.loop import (
    World,
    finish_distributed,
    init_distributed,
    run,
    seed_everything,
)

__all__ = ["STAGES", "TrainConfig", "DryRun", "dry_run", "run_stage", "build_stage"]


def build_stage(cfg: TrainConfig, world: World):
    if cfg.stage == "vae":
        from streamavatar_cli.train.vae_stage import VAEStage

        return VAEStage(cfg, world)
    if cfg.stage == "teacher":
        from streamavatar_cli.train.teacher import TeacherStage

        return TeacherStage(cfg, world)
    if cfg.stage == "ode-pairs":
        from streamavatar_cli.train.ode_pairs import OdePairsJob

        return OdePairsJob(cfg, world)
    if cfg.stage == "ode-init":
        from streamavatar_cli.train.ode_init import OdeInitStage

        return OdeInitStage(cfg, world)
    if cfg.stage == "distill":
        from streamavatar_cli.train.distill import DistillStage

        return DistillStage(cfg, world)
    from streamavatar_cli.train.refine import RefineStage

    return RefineStage(cfg, world)


EMA_MODULE = {
    "vae": "vae",
    "teacher": "dit",
    "ode-init": "dit",
    "distill": "student",
    "refine": "student",
}


def run_stage(
    cfg: TrainConfig,
    out: Path,
    *,
    resume: bool = False,
    max_steps: int | None = None,
    on_step: Callable[[int, int, dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Run one stage to the end of its config (or `max_steps` more steps) in `out`."""
    world = init_distributed()
    seed_everything(cfg.run.seed + world.rank)
    if cfg.run.threads > 0:
        torch.set_num_threads(cfg.run.threads)
    stage = build_stage(cfg, world)
    try:
        if cfg.stage == "ode-pairs":
            if world.main:
                stage.run(out, on_step=on_step)
            return []
        return run(
            stage, cfg, out, resume=resume, max_steps=max_steps,
            ema_module=EMA_MODULE[cfg.stage], on_step=on_step, world=world,
        )  # fmt: skip
    finally:
        finish_distributed(world)


@dataclass(frozen=True)
class DryRun:
    stage: str
    trainable_params: int
    frozen_params: int
    memory_bytes: int
    step_flops: float
    tokens_per_sample: int

    def lines(self) -> list[str]:
        return [
            f"stage            {self.stage}",
            f"trainable params {self.trainable_params / 1e6:,.2f} M",
            f"frozen params    {self.frozen_params / 1e6:,.2f} M",
            f"memory estimate  {self.memory_bytes / 2**30:,.2f} GiB (weights, grads, AdamW; "
            "activations not included: see --grad-checkpointing)",
            f"tokens / sample  {self.tokens_per_sample:,}",
            f"step FLOPs       {self.step_flops:.3e} (forward x 3 for backward, x batch)",
        ]


def dry_run(cfg: TrainConfig) -> DryRun:
    """Parameter count, a memory estimate and the FLOPs of one training step, from a model on
    the `meta` device (no weights are read, so the 5B configs cost nothing)."""
    from torch.utils.flop_counter import FlopCounterMode

    from streamavatar_cli.models import WanDiT
    from streamavatar_cli.train.common import base_config, bidirectional_v

    missing = {k: "" for k in ("teacher", "vae_from") if not Path(getattr(cfg.model, k)).is_dir()}
    if missing:  # plan before the earlier stages ran: the shapes the config itself gives
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **missing))
    config = base_config(cfg)
    with torch.device("meta"):
        dit = WanDiT(config.dit)
    n = sum(p.numel() for p in dit.parameters())
    copies = {"vae": 0, "teacher": 1, "ode-pairs": 0, "ode-init": 1, "distill": 2, "refine": 2}
    frozen = {"vae": 0, "teacher": 0, "ode-pairs": 1, "ode-init": 0, "distill": 1, "refine": 1}
    trainable = n * copies[cfg.stage]
    ema = 1 if cfg.optim.ema > 0 else 0  # bf16 is autocast: every weight is held in fp32
    memory = trainable * (4 + 4 + 8 + 4 * ema) + n * frozen[cfg.stage] * 4
    w, h = cfg.data.size
    stride = config.pixel_stride
    f = cfg.data.window_latents
    hw = (h // config.vae.spatial_stride, w // config.vae.spatial_stride)
    tokens = (1 + f) * (h // stride) * (w // stride)
    d = config.dit
    with torch.device("meta"):
        ref = torch.zeros(1, d.in_dim, 1, *hw)
        x = torch.zeros(1, d.in_dim, f, *hw)
        audio = torch.zeros(1, f, d.audio_window, d.audio_feature_layers, d.audio_feature_dim)
        counter = FlopCounterMode(display=False)
        with counter:
            bidirectional_v(dit, ref, x, torch.zeros(1), audio, audio)
    passes = {"vae": 0, "teacher": 3, "ode-pairs": 1, "ode-init": 6, "distill": 12, "refine": 9}
    flops = counter.get_total_flops() * passes[cfg.stage] * cfg.optim.batch_size
    return DryRun(cfg.stage, trainable, n * frozen[cfg.stage], memory, float(flops), tokens)

"""Training configs: one TOML file per stage, read once into frozen dataclasses.

A file has the sections `[run]`, `[optim]`, `[data]`, `[model]` and one section named after its
stage (`[vae]`, `[teacher]`, `[ode_pairs]`, `[ode_init]`, `[distill]`, `[refine]`). Unknown
sections and keys are errors that name them, like `config.json` (config.py).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

STAGES: tuple[str, ...] = ("vae", "teacher", "ode-pairs", "ode-init", "distill", "refine")


def _build(cls, data: dict[str, Any], where: str):
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a table, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(known)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    dtype: Literal["fp32", "bf16"] = "fp32"
    grad_checkpointing: bool = False
    checkpoint_every: int = 100
    """Steps between checkpoints (also written at the end and on Ctrl-C)."""
    log_every: int = 10
    threads: int = 0
    """torch intra-op threads (0: torch's default)."""


@dataclass(frozen=True)
class OptimConfig:
    steps: int = 1000
    batch_size: int = 4
    lr: float = 1e-4
    warmup: int = 0
    min_lr_ratio: float = 1.0
    """Cosine decay after warmup down to lr x this at the last step (1.0: constant lr)."""
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    ema: float = 0.0
    """EMA decay of the weights (0: off); the stage's output uses the EMA weights when on."""


@dataclass(frozen=True)
class DataConfig:
    source: Literal["puppet", "folder"] = "puppet"
    path: str = ""
    """`folder` source: a folder of clip folders (clip.mp4, agent.wav[, user.wav, mask.json])."""
    seeds: tuple[int, int] = (0, 64)
    """`puppet` source: clip seeds [first, last) (training seeds; evaluation seeds are >= 100000)."""
    seconds: float = 8.0
    size: tuple[int, int] = (128, 128)
    window_latents: int = 12
    """Generated latent frames per training sample (4 chunks of 3: every RAPR layout)."""
    windows_per_clip: int = 4
    cache: str = ""
    """Folder of the latent cache (built once by the first stage that needs it)."""


@dataclass(frozen=True)
class ModelSection:
    preset: str = "tiny"
    dit: dict = field(default_factory=dict)
    """Overrides of the preset's DiT fields."""
    vae: dict = field(default_factory=dict)
    """Overrides of the preset's VAE fields (the `vae` stage)."""
    vae_from: str = ""
    """A model folder whose VAE is used (stages after `vae`), or where the `vae` stage starts."""
    init: str = ""
    """Where the DiT starts: a base Wan checkpoint (teacher) or the previous stage's folder."""
    teacher: str = ""
    """The teacher model folder (ode-pairs, distill, refine)."""
    stream: dict = field(default_factory=dict)
    """Overrides of the student's StreamConfig (timesteps, shift, window, RAPR...)."""
    name: str = ""


@dataclass(frozen=True)
class VAEStage:
    clip_frames: int = 9
    crop: int = 0
    """Train on random square crops of this side (0: whole frames); the VAE is convolutional
    apart from its middle attention, and crops cut the cost per step."""
    long_from: int = 0
    """From this step on (0: never), windows of `long_clip_frames` frames cropped to
    `long_crop`: the causal cache reaches its steady state only after several groups of 4, so
    long streams need long training windows; smaller crops keep the step cost."""
    long_clip_frames: int = 25
    long_crop: int = 48
    l1_weight: float = 1.0
    ssim_weight: float = 0.5
    kl_weight: float = 1e-6
    motion_weight: float = 0.0
    """L1 weight gain on pixels that move (away from the window's mean frame), 0: plain L1."""
    motion_tau: float = 0.1
    """Deviation (in [-1, 1] pixel units) that gets the full gain."""
    region_box: tuple[float, ...] = ()
    """As in [teacher], in pixels: a fixed region of the whole frame (the mouth of an aligned
    domain) whose pixels get L1 weight 1 + region_weight; a crop gets its part of the box."""
    region_weight: float = 0.0
    region_crops: float = 0.0
    """Share of the crops placed to hold the whole `region_box` (where one fits); the rest,
    and all when 0, anywhere. A random 48 x 48 crop of a 128 x 128 frame holds the puppet's
    mouth 1 time in 13 (a 64 x 64 crop 1 in 3)."""
    temporal_weight: float = 0.0
    """Weight of an L1 on the frame-to-frame changes (recon[t] - recon[t-1] against the
    video's), under the same motion/region weights; 0: off. A latent holds 4 frames, and the
    plain L1 is nearly as happy with their mean as with their motion (the mouth of a syllable)."""
    stats_clips: int = 32
    train: Literal["all", "decoder"] = "all"
    """"decoder": start from `model.vae_from`, freeze its encoder and train only the decoder
    (and its input projection). The latents, and so every DiT trained on them, stay valid: the
    export keeps the starting VAE's latent statistics."""
    latent_noise: float = 0.0
    """`train = "decoder"`: std of Gaussian noise added to the (unit-scale) latents the decoder
    is trained on, so it also decodes the near misses a DiT generates."""


def check_box(box: tuple[float, ...], name: str = "region_box") -> None:
    """A loss-weight box is [x0, y0, x1, y1] in fractions of the frame, non-empty."""
    if len(box) != 4 or not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
        raise ValueError(
            f"{name}={list(box)} must be [x0, y0, x1, y1] with 0 <= x0 < x1 <= 1 and "
            "0 <= y0 < y1 <= 1 (fractions of the frame)"
        )


@dataclass(frozen=True)
class TeacherStage:
    t_shift: float = 3.0
    """Training timesteps: sigma = shift u / (1 + (shift - 1) u), u ~ U(0, 1) (SD3/Wan style)."""
    audio_dropout: float = 0.0
    """Probability per sample of zeroing both audio streams."""
    talk_dropout: float = 0.0
    """Probability per sample of zeroing the talk features alone (talk guidance's unconditional)."""
    listen_dropout: float = 0.0
    """Probability per sample of zeroing the listen features alone (listen guidance's
    unconditional, and the ablation's "talk-only" input)."""
    audio_lr_scale: float = 1.0
    """Learning rate of the audio modules relative to optim.lr: their output projections start
    at zero, so nothing upstream of them learns until those grow."""
    text_encoder: str = "auto"
    """Where the umT5 encoder for `prompt` is: "auto" (the model.init folder, required when
    model.init is a base Wan checkpoint without a stored prompt), a folder, or "none" (keep the
    checkpoint's prompt_context; from scratch a learned constant, see train/teacher.py)."""
    prompt: str = "a person is speaking and listening"
    motion_weight: float = 0.0
    """Flow-loss weight gain on latent positions away from the window's mean latent, 0: plain MSE."""
    motion_tau: float = 0.3
    """Latent deviation (unit-scale latents, channel mean) that gets the full gain."""
    region_box: tuple[float, ...] = ()
    """[x0, y0, x1, y1] in fractions of the frame: a fixed region (the mouth of an aligned
    domain) whose latent cells get loss weight 1 + region_weight (train/losses.py)."""
    region_weight: float = 0.0
    listen_weight: float = 0.0
    """Loss weight gain on latent frames where the avatar listens (x (1 + listen_weight) on a
    frame whose audio window is all listen audio; train/losses.py). 0: off."""
    listen_region_box: tuple[float, ...] = ()
    """[x0, y0, x1, y1] in fractions of the frame: the region (the head of an aligned domain)
    whose latent cells get weight 1 + listen_region_weight on listen frames, in place of
    `region_box` there (train/losses.py). With listen_region_weight 0 (the default),
    `region_box` applies on every frame."""
    listen_region_weight: float = 0.0
    temporal_weight: float = 0.0
    """Weight of an L1 on the latent-frame-to-frame changes of the flow error (v[t] - v[t-1]
    against the target's), under the same weights; 0: off. An error the frames share (the
    appearance a small model blurs) cancels in it, an error in the motion (a nod, the mouth)
    does not: the loss of what moves, not of what is still."""


@dataclass(frozen=True)
class OdePairsStage:
    sampler_steps: int = 30
    sampler_shift: float = 5.0
    samples: int = 256
    shard_size: int = 64
    talk_guidance: float = 1.0
    """CFG scale on the talk features (unconditional: talk zeroed); 1 = no guidance."""
    listen_guidance: float = 1.0
    """CFG scale on the listen features (unconditional: listen zeroed); 1 = no guidance."""


@dataclass(frozen=True)
class OdeInitStage:
    pairs: str = ""
    rapr_offset_max: int = 12
    """RAPR positions are computed as if the clip started up to this many latent frames later."""
    motion_weight: float = 0.0
    """As in [teacher]: regression weight gain on positions away from the window's mean latent."""
    motion_tau: float = 0.3
    region_box: tuple[float, ...] = ()
    """As in [teacher]: a fixed region whose latent cells get weight 1 + region_weight."""
    region_weight: float = 0.0
    listen_weight: float = 0.0
    """As in [teacher]: weight gain on the latent frames where the avatar listens."""
    listen_region_box: tuple[float, ...] = ()
    """As in [teacher]: the region weighted on listen frames, in place of `region_box`."""
    listen_region_weight: float = 0.0


@dataclass(frozen=True)
class DistillStage:
    alpha: float = 1.2
    t_max: float = 0.98
    fake_lr: float = 1e-4
    fake_updates: int = 1
    """Fake-score updates per generator update."""
    rollout_chunks: int = 4
    talk_guidance: float = 1.0
    """As in [ode_pairs]: CFG scale on the talk features of the real score (the teacher)."""
    listen_guidance: float = 1.0
    """As in [ode_pairs]: CFG scale on the listen features of the real score."""


@dataclass(frozen=True)
class RefineStage:
    n_queries: int = 3
    query_layers: tuple[int, ...] = ()
    """Teacher blocks whose outputs the Q-Formers read (empty: evenly spread)."""
    d_lr: float = 1e-4
    r1_weight: float = 0.1
    r1_sigma: float = 0.01
    rollout_chunks: int = 4
    adversarial_weight: float = 1.0
    """Weight of the generator's adversarial loss; 0: no discriminator is trained (the
    regression below alone)."""
    regression_weight: float = 0.0
    """Weight of an x0 regression (MSE; L1 with `regression_l1`) of the student's rollout to
    the real clip's latents inside `regression_box` on talk frames, added to the generator's
    loss; 0: the paper's adversarial loss alone."""
    regression_box: tuple[float, ...] = ()
    """Where the regression looks (x0, y0, x1, y1 in fractions of the frame; empty: the whole
    frame): the mouth box of an aligned domain. On talk frames the agent's audio fixes the
    mouth, so the real clip's mouth is a fair target; the head's and hands' motion, and
    everything on listen frames, is not (a regression there averages the nods away)."""
    regression_l1: bool = False
    """L1 instead of MSE for the regression: the conditional median rather than the mean, so
    a mouth whose timing is uncertain is not learned as a half-open average."""
    anchor_weight: float = 0.0
    """Weight of an MSE of the rollout to the starting student's rollout (same noise, same
    inputs) everywhere the regression does not look (everywhere without one), so that what
    the student already does there (the nods) is kept."""


STAGE_SECTIONS = {
    "vae": ("vae", VAEStage),
    "teacher": ("teacher", TeacherStage),
    "ode-pairs": ("ode_pairs", OdePairsStage),
    "ode-init": ("ode_init", OdeInitStage),
    "distill": ("distill", DistillStage),
    "refine": ("refine", RefineStage),
}


@dataclass(frozen=True)
class TrainConfig:
    stage: str
    run: RunConfig
    optim: OptimConfig
    data: DataConfig
    model: ModelSection
    stage_options: Any
    source: str = ""

    def validate(self) -> TrainConfig:
        if self.stage not in STAGES:
            raise ValueError(f"stage {self.stage!r}; allowed: {list(STAGES)}")
        if self.run.dtype not in ("fp32", "bf16"):
            raise ValueError(f"run.dtype={self.run.dtype!r}; allowed: 'fp32', 'bf16'")
        o = self.optim
        if o.steps < 0 or o.batch_size < 1 or not o.lr > 0 or not 0 <= o.ema < 1:
            raise ValueError(
                f"optim: steps={o.steps} >= 0, batch_size={o.batch_size} >= 1, lr={o.lr} > 0 "
                f"and 0 <= ema={o.ema} < 1 are required"
            )
        d = self.data
        if d.source not in ("puppet", "folder"):
            raise ValueError(f"data.source={d.source!r}; allowed: 'puppet', 'folder'")
        if d.source == "folder" and not d.path:
            raise ValueError("data.source='folder' needs data.path (a folder of clip folders)")
        if d.window_latents < 1 or d.window_latents % 3:
            raise ValueError(f"data.window_latents={d.window_latents} must be a multiple of 3")
        for name in ("region_box", "listen_region_box"):  # checked here: before a cache build
            if getattr(self.stage_options, name.replace("_box", "_weight"), 0.0) > 0:
                check_box(getattr(self.stage_options, name), name)
        if self.stage == "vae":
            v = self.stage_options
            if v.train not in ("all", "decoder"):
                raise ValueError(f"[vae] train={v.train!r}; allowed: 'all', 'decoder'")
            if v.train == "decoder" and not self.model.vae_from:
                raise ValueError("[vae] train='decoder' fine-tunes a trained VAE: set [model] "
                                 "vae_from to its folder")  # fmt: skip
            if v.latent_noise < 0:
                raise ValueError(f"[vae] latent_noise={v.latent_noise} must be >= 0")
        if getattr(self.stage_options, "regression_box", ()):
            check_box(self.stage_options.regression_box, "regression_box")
        return self

    def replace_optim(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, optim=dataclasses.replace(self.optim, **changes))

    @classmethod
    def from_dict(cls, data: dict[str, Any], stage: str, where: str = "config") -> TrainConfig:
        if stage not in STAGE_SECTIONS:
            raise ValueError(f"unknown stage {stage!r}; allowed: {list(STAGES)}")
        section, stage_cls = STAGE_SECTIONS[stage]
        allowed = {"stage", "run", "optim", "data", "model", section}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(
                f"{where}: unknown section(s) {unknown} for stage {stage!r}; allowed: {sorted(allowed)}"
            )
        if data.get("stage", stage) != stage:
            raise ValueError(f"{where} is a {data['stage']!r} config, not {stage!r}")
        return cls(
            stage=stage,
            run=_build(RunConfig, data.get("run", {}), f"{where} [run]"),
            optim=_build(OptimConfig, data.get("optim", {}), f"{where} [optim]"),
            data=_build(DataConfig, data.get("data", {}), f"{where} [data]"),
            model=_build(ModelSection, data.get("model", {}), f"{where} [model]"),
            stage_options=_build(stage_cls, data.get(section, {}), f"{where} [{section}]"),
            source=where,
        ).validate()

    @classmethod
    def load(cls, path: str | Path, stage: str) -> TrainConfig:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: not valid TOML ({e})") from e
        return cls.from_dict(data, stage, str(path))

"""`streamavatar bench --ablation`: what the reference sink, RAPR and the listen branch do over
long streams (issue 14; the paper's Tables 1-2), measured on held-out puppets with ground truth.

Rows are inference-time switches on one student (baseline: no sink and true frame indices;
+ sink; + sink + RAPR, the default; talk-only: listen features zeroed), optional students
trained differently (`trained` rows: each runs with the stream settings of its own config.json,
the ones it was trained with, since an inference switch alone is not the paper's ablation), and
a sweep of RAPR's cap D and of the window on the first `sweep_seconds` of the same streams.
Every stream is scored from its pixels (`puppet.evaluate`), against the ground-truth render of
its puppet; the drift curves are per-second means of the per-frame appearance distance.

Streams are independent, so they run in `jobs` worker processes of one torch thread each: at
this model size a second torch thread speeds a render up only 1.2x (docs/benchmarks.md), a
second process running another stream nearly 2x.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from streamavatar_cli.config import FPS, StreamConfig
from streamavatar_cli.pipeline.devices import usable_cores
from streamavatar_cli.puppet.metrics import DRIFT_TIMES_S

TRUTH = "truth"
Kind = Literal["reference", "inference", "trained", "sweep"]
DRIFT_KEYS = tuple(f"{t:g}s" for t in DRIFT_TIMES_S)  # score_estimates' identity_drift keys
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,39}")
_RAPR_LOG = "streamavatar_cli.models.rapr"


@dataclass(frozen=True)
class AblationPlan:
    """What to run. `sweep_seconds` None: min(60 s, `seconds`). `jobs` None: one worker per
    core. PSNR/SSIM compare every `quality_every`-th frame with the truth (SSIM is the costly
    metric: on every frame it would add about 45% to a run of the bundled model's size)."""

    seconds: float = 180.0
    puppets: int = 2
    sweep_seconds: float | None = None
    size: int = 128
    max_distances: tuple[int, ...] = (4, 6, 10, 16)
    windows: tuple[int, ...] = (3, 6, 9)
    quality_every: int = 5
    jobs: int | None = None
    trained: tuple[tuple[str, str], ...] = ()  # (name, model folder) of students trained apart

    @classmethod
    def quick(cls, **overrides: Any) -> AblationPlan:
        """A smoke run of the whole grid: one puppet, 30 s (sweep 10 s), under 2 minutes."""
        return replace(cls(seconds=30.0, puppets=1, sweep_seconds=10.0), **overrides)

    @property
    def sweep_length(self) -> float:
        return min(60.0, self.seconds) if self.sweep_seconds is None else self.sweep_seconds

    @property
    def workers(self) -> int:
        return self.jobs if self.jobs is not None else usable_cores()

    def validate(self) -> AblationPlan:
        if not self.seconds >= 1:
            raise ValueError(f"seconds={self.seconds} must be >= 1")
        if not 1 <= self.sweep_length <= self.seconds:
            raise ValueError(
                f"sweep seconds={self.sweep_length} must be between 1 and seconds={self.seconds}"
            )
        if self.puppets < 1:
            raise ValueError(f"puppets={self.puppets} must be >= 1")
        if self.size < 32 or self.size % 16:
            raise ValueError(f"size={self.size} must be a multiple of 16, at least 32")
        if self.quality_every < 1:
            raise ValueError(f"quality_every={self.quality_every} must be >= 1")
        if self.jobs is not None and self.jobs < 1:
            raise ValueError(f"jobs={self.jobs} must be >= 1")
        names = [name for name, _ in self.trained]
        for name in names:
            if not _NAME.fullmatch(name) or name in BUILTIN or name == TRUTH:
                raise ValueError(
                    f"trained variant name {name!r}: use letters, digits, '.', '_', '+', '-' "
                    f"(up to 40) and none of {[*BUILTIN, TRUTH]}"
                )
        if len(set(names)) != len(names):
            raise ValueError(f"trained variant names must differ, got {names}")
        return self


def parse_variant_model(text: str) -> tuple[str, str]:
    """`NAME=FOLDER` (the CLI's `--variant-model`) -> (name, folder)."""
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise ValueError(
            f"--variant-model {text!r}: expected NAME=FOLDER, e.g. no-rapr=runs/tiny/ode-init-no-rapr"
        )
    return name, folder


@dataclass(frozen=True)
class Variant:
    """One row: a stream configuration of a model. `long` rows run for the plan's `seconds`,
    the others for `sweep_seconds`; a sweep entry equal to the default is read off the default's
    run (`same_as`) instead of streamed twice."""

    name: str
    label: str
    kind: Kind
    stream: StreamConfig | None = None
    talk_only: bool = False
    model: str | None = None  # None: the bench's model
    long: bool = True
    same_as: str | None = None
    note: str = ""


# Inference-time switches on the same student (ARCHITECTURE section 4), in the paper's order.
BUILTIN = {
    "baseline": ("baseline (no sink, vanilla RoPE)", {"sink": False, "rapr": False}),
    "sink": ("+ sink", {"sink": True, "rapr": False}),
    "sink-rapr": ("+ sink + RAPR (default)", {}),
    "talk-only": ("talk-only (listen zeroed)", {}),
}
DEFAULT = "sink-rapr"


def plan_variants(
    plan: AblationPlan, model: str | None, stream: StreamConfig, trained: dict[str, StreamConfig]
) -> tuple[list[Variant], list[Variant]]:
    """The rows and sweep entries of `plan` for `model`, whose stream settings are `stream`;
    `trained` maps each trained variant to its own model's settings."""
    rows = [
        Variant(name, label, "inference", stream.replace(**over), talk_only=name == "talk-only",
                model=model, long=name != "talk-only")
        for name, (label, over) in BUILTIN.items()
    ]  # fmt: skip
    for name, folder in plan.trained:
        label = f"{name} (trained: {folder})"
        rows.append(Variant(name, label, "trained", trained[name], model=folder))
    return rows, [replace(v, model=model) for v in sweep_variants(plan, stream)]


def sweep_variants(plan: AblationPlan, stream: StreamConfig) -> list[Variant]:
    """D at the default window; windows at the default D, raised to sink + window where the
    default would make window positions collide with the sink's (so the window alone changes)."""
    out = []
    for d in plan.max_distances:
        s = stream.replace(rapr_max_distance=d)
        out.append(_sweep_entry(f"D={d}", f"D {d}", s, stream))
    for w in plan.windows:
        d = max(stream.rapr_max_distance, stream.sink_frames + w)
        s = stream.replace(window_frames=w, rapr_max_distance=d)
        label = f"window {w}" + ("" if d == stream.rapr_max_distance else f" (D {d})")
        out.append(_sweep_entry(f"window={w}", label, s, stream))
    return out


def _sweep_entry(name: str, label: str, s: StreamConfig, default: StreamConfig) -> Variant:
    collides = s.rapr and s.rapr_max_distance < s.sink_frames + s.window_frames
    note = "window positions overlap the sink's" if collides else ""
    same = DEFAULT if s == default else None
    label += " (default)" if same else ""
    return Variant(name, label, "sweep", s, long=False, same_as=same, note=note)


# ---- one stream: a task for a worker --------------------------------------------------------


@dataclass(frozen=True)
class Task:
    variant: str
    seed: int
    seconds: float  # of the case (every task of a puppet uses the same, full-length case)
    frames: int  # how many of its frames to stream
    size: int
    prefixes: tuple[int, ...]  # frame counts to score
    keep: tuple[float, ...] = ()  # times (s) whose frame to return
    stream: StreamConfig | None = None  # None: the ground truth
    talk_only: bool = False
    model: str | None = None
    quality_every: int = 5


@dataclass
class TaskResult:
    variant: str
    seed: int
    scores: dict[int, dict]  # prefix (frames) -> score dict
    curve: np.ndarray  # per-second mean appearance distance
    frames: dict[float, np.ndarray]
    wall: float


def frame_index(t: float, n_frames: int) -> int:
    """The last frame of second `t` (frame 0 is at t = 0)."""
    return min(int(round(t * FPS)), n_frames) - 1


def per_second(values: np.ndarray) -> np.ndarray:
    """Means over whole seconds: entry k covers frames [25 k, 25 k + 25), so entry t - 1 is
    the `identity_drift` of `score_estimates` at t seconds."""
    n = len(values) // FPS * FPS
    return values[:n].reshape(-1, FPS).mean(1)


class _Cases:
    """The last puppet case rendered (tasks come puppet by puppet: each worker renders a
    180 s case, 4500 frames of ground truth, once per puppet rather than once per stream)."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.case = None

    def get(self, seed: int, seconds: float, size: int):
        from streamavatar_cli.puppet.evaluate import puppet_case

        if self.key != (seed, seconds, size):
            self.case = None  # free the old truth before rendering the next one
            self.case = puppet_case(seed, seconds, (size, size))
            self.key = (seed, seconds, size)
        return self.case


def run_task(task: Task, models: dict, cases: _Cases) -> TaskResult:
    """One stream (or the ground truth) of one puppet, scored at each prefix."""
    from streamavatar_cli.pipeline.model import open_model
    from streamavatar_cli.puppet.evaluate import StreamEstimates, estimate_stream
    from streamavatar_cli.puppet.metrics import FrameEstimates

    start = time.perf_counter()
    case = cases.get(task.seed, task.seconds, task.size)
    keep = {t: frame_index(t, task.frames) for t in task.keep}
    if task.stream is None:
        est = StreamEstimates(
            FrameEstimates.of(case.truth, case.reference), np.zeros((0, 3)),
            {j: case.truth[j] for j in keep.values()}, {}, None,
        )  # fmt: skip
    else:
        if task.model not in models:
            models[task.model] = open_model(task.model)
        est = estimate_stream(
            models[task.model], case, task.stream, talk_only=task.talk_only,
            keep_frames=tuple(keep.values()), quality_every=task.quality_every,
            n_frames=task.frames,
        )  # fmt: skip
    return TaskResult(
        task.variant, task.seed, {n: est.scores(case, n) for n in task.prefixes},
        per_second(est.estimates.appearance), {t: est.frames[j] for t, j in keep.items()},
        time.perf_counter() - start,
    )  # fmt: skip


_worker_models: dict = {}
_worker_cases = _Cases()


def _init_worker() -> None:
    """One torch thread per worker; Ctrl-C is the parent's to handle (it terminates the pool)."""
    import signal

    import torch

    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger(_RAPR_LOG).setLevel(logging.ERROR)  # the sweep collides on purpose


def _worker_run(task: Task) -> TaskResult:
    return run_task(task, _worker_models, _worker_cases)


@contextlib.contextmanager
def _quiet_rapr() -> Iterator[None]:
    """The sweep's small D values make window positions collide with the sink's on purpose
    (the table says so); RAPR's warning would repeat for every stream."""
    logger = logging.getLogger(_RAPR_LOG)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def run_tasks(tasks: list[Task], jobs: int, models: dict) -> Iterator[TaskResult]:
    """Results as they finish: in this process for one job, else in a spawned pool (fork after
    torch has started its thread pools can hang)."""
    if jobs <= 1:
        cases = _Cases()
        with _quiet_rapr():
            for task in tasks:
                yield run_task(task, models, cases)
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(min(jobs, len(tasks)), initializer=_init_worker) as pool:
        yield from pool.imap_unordered(_worker_run, tasks)


# ---- the bench ------------------------------------------------------------------------------


@dataclass
class Row:
    """One variant's metrics, averaged over the puppets (`per_puppet` holds each one's)."""

    name: str
    label: str
    kind: Kind
    seconds: float
    metrics: dict[str, Any]
    per_puppet: list[dict] = field(default_factory=list)
    note: str = ""
    stream: dict[str, Any] | None = None  # the settings it ran with (None: ground truth)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "label": self.label, "kind": self.kind, "seconds": self.seconds,
            "note": self.note, "stream": self.stream, **self.metrics,
            "per_puppet": self.per_puppet,
        }  # fmt: skip


@dataclass
class Progress:
    done: int
    total: int
    result: TaskResult
    video_done: float
    video_total: float
    elapsed: float

    def line(self) -> str:
        r = self.result
        head = f"[{self.done}/{self.total}] {r.variant} puppet-{r.seed} ({len(r.curve)} s)"
        if not self.video_done:
            return f"{head} in {r.wall:.0f} s"
        eta = self.elapsed / self.video_done * (self.video_total - self.video_done)
        return f"{head} in {r.wall:.0f} s; about {eta / 60:.1f} min left"


def build_tasks(plan: AblationPlan, variants: list[Variant], sweep: list[Variant]) -> list[Task]:
    """Puppet by puppet (so a worker renders each case once), long streams first within a
    puppet (so the short ones fill the end of the run on every core)."""
    from streamavatar_cli.puppet.evaluate import EVAL_SEED_BASE

    long_n, sweep_n = int(round(plan.seconds * FPS)), int(round(plan.sweep_length * FPS))
    keep = tuple(t for t in DRIFT_TIMES_S if t <= plan.seconds) or (plan.seconds,)
    runs = [v for v in [*variants, *sweep] if v.same_as is None]
    runs.sort(key=lambda v: not v.long)
    tasks = []
    for k in range(plan.puppets):
        seed = EVAL_SEED_BASE + k
        base = Task(TRUTH, seed, plan.seconds, long_n, plan.size, (long_n, sweep_n),
                    keep if k == 0 else (), quality_every=plan.quality_every)  # fmt: skip
        tasks.append(base)
        for v in runs:
            n = long_n if v.long else sweep_n
            tasks.append(replace(
                base, variant=v.name, frames=n, prefixes=tuple(sorted({n, sweep_n})),
                keep=tuple(t for t in base.keep if frame_index(t, n) == frame_index(t, long_n)),
                stream=v.stream, talk_only=v.talk_only, model=v.model,
            ))  # fmt: skip
    return tasks


def _mean_metrics(scores: list[dict]) -> dict[str, Any]:
    """The table's metrics, each the mean over puppets (keys missing from any puppet dropped)."""

    def mean(get: Callable[[dict], Any]) -> float | None:
        values = [get(s) for s in scores]
        return None if any(v is None for v in values) else float(np.mean(values))

    out = {
        "identity_drift": {
            k: mean(lambda s, k=k: s["identity_drift"].get(k))
            for k in DRIFT_KEYS
            if all(k in s["identity_drift"] for s in scores)
        }
    }
    for key in ("lip_sync", "listen_motion", "mouth_listen", "mouth_talk", "psnr", "ssim"):
        out[key] = mean(lambda s, key=key: s.get(key))
    out["rtf"] = mean(lambda s: (s.get("rtf") or {}).get("total"))
    return out


def _row(v: Variant, seconds: float, n: int, results: list[TaskResult]) -> Row:
    scores = [r.scores[n] for r in sorted(results, key=lambda r: r.seed)]
    per = [{"seed": r.seed, **{k: s[k] for k in s if k != "frames"}}
           for r, s in zip(sorted(results, key=lambda r: r.seed), scores, strict=True)]  # fmt: skip
    stream = None if v.stream is None else v.stream.to_dict()
    return Row(v.name, v.label, v.kind, seconds, _mean_metrics(scores), per, v.note, stream)


@dataclass
class AblationResult:
    """Tables, curves and pictures of one run; `lines()` is the Markdown that
    docs/benchmarks.md records, `to_dict()` the JSON."""

    plan: AblationPlan
    model: str
    untrained: bool
    rows: list[Row]  # ground truth first
    sweep: list[Row]  # ground truth first, at the sweep length
    curves: dict[str, np.ndarray]  # per-second drift, mean over puppets
    frames: dict[str, dict[float, np.ndarray]]  # puppet 0: variant -> time -> image
    labels: dict[str, str]
    wall: float

    def lines(self) -> list[str]:
        p = self.plan
        head = (
            f"ablation: {self.model} on {p.puppets} held-out puppet(s) at {p.size}x{p.size}, "
            f"{p.seconds:g} s streams (talk-only and sweep: the first {p.sweep_length:g} s), "
            f"{self.wall / 60:.1f} min"
        )
        out = [head]
        if self.untrained:
            out.append("(untrained model: these numbers test the bench, not the method)")
        out += ["", *_table(self.rows, MAIN_COLUMNS), "", *_table(self.sweep, SWEEP_COLUMNS)]
        return out

    def to_dict(self) -> dict[str, Any]:
        plan = {**self.plan.__dict__, "sweep_seconds": self.plan.sweep_length}
        return {
            "model": self.model, "untrained": self.untrained, "plan": plan,
            "wall_seconds": self.wall, "rows": [r.to_dict() for r in self.rows],
            "sweep": [r.to_dict() for r in self.sweep],
            "drift_curves": {k: [round(float(x), 5) for x in v] for k, v in self.curves.items()},
        }  # fmt: skip


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


Column = tuple[str, Callable[[Row], str]]
MAIN_COLUMNS: list[Column] = [
    ("variant", lambda r: r.label),
    ("kind", lambda r: r.kind),
    ("s", lambda r: f"{r.seconds:g}"),
    *[(f"drift {k[:-1]} s", lambda r, k=k: _fmt(r.metrics["identity_drift"].get(k), 3))
      for k in DRIFT_KEYS],
    ("lip-sync", lambda r: _fmt(r.metrics["lip_sync"], 2)),
    ("listen motion", lambda r: _fmt(r.metrics["listen_motion"], 1)),
    ("mouth listen", lambda r: _fmt(r.metrics["mouth_listen"], 3)),
    ("PSNR", lambda r: _fmt(r.metrics["psnr"], 1)),
    ("SSIM", lambda r: _fmt(r.metrics["ssim"], 3)),
    ("RTF", lambda r: _fmt(r.metrics["rtf"], 2)),
]  # fmt: skip
SWEEP_COLUMNS: list[Column] = [
    ("sweep", lambda r: r.label + (f" ({r.note})" if r.note else "")),
    *[c for c in MAIN_COLUMNS if c[0] not in ("variant", "kind", "drift 180 s")],
]


def _table(rows: list[Row], columns: list[Column]) -> list[str]:
    out = ["| " + " | ".join(name for name, _ in columns) + " |"]
    out.append("|" + "---|" * len(columns))
    out += ["| " + " | ".join(get(r) for _, get in columns) + " |" for r in rows]
    return out


def run_ablation(
    plan: AblationPlan | None = None,
    model: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> AblationResult:
    """Stream every variant of `plan` over its puppets and score them (see the module doc).
    `model`: as `open_model` (None: the bundled model). Models load here first, so a bad
    folder fails before any stream starts."""
    from streamavatar_cli.errors import ModelError
    from streamavatar_cli.pipeline.model import open_model

    plan = (plan or AblationPlan()).validate()
    started = time.perf_counter()
    models = {model: open_model(model)}
    for name, folder in plan.trained:
        try:
            models[folder] = open_model(folder)
        except ModelError as e:
            message = str(e).replace("--model", "--variant-model")
            raise ModelError(f"trained variant {name!r}: {message}") from e
    trained = {name: models[folder].config.stream for name, folder in plan.trained}
    variants, sweep = plan_variants(plan, model, models[model].config.stream, trained)
    tasks = build_tasks(plan, variants, sweep)
    results: dict[str, list[TaskResult]] = {}
    video_total = sum(t.frames for t in tasks if t.stream is not None) / FPS  # truth is cheap
    video_done = 0.0
    for done, result in enumerate(run_tasks(tasks, plan.workers, models), 1):
        results.setdefault(result.variant, []).append(result)
        video_done += len(result.curve) if result.variant != TRUTH else 0
        if on_progress is not None:
            elapsed = time.perf_counter() - started
            on_progress(Progress(done, len(tasks), result, video_done, video_total, elapsed))
    return _assemble(plan, models[model], variants, sweep, results, time.perf_counter() - started)


def _assemble(plan, model, variants, sweep, results, wall) -> AblationResult:
    long_n, sweep_n = int(round(plan.seconds * FPS)), int(round(plan.sweep_length * FPS))
    truth = Variant(TRUTH, "ground truth", "reference")
    rows = [_row(truth, plan.seconds, long_n, results[TRUTH])]
    for v in variants:
        n, s = (long_n, plan.seconds) if v.long else (sweep_n, plan.sweep_length)
        rows.append(_row(v, s, n, results[v.name]))
    sweep_rows = [_row(truth, plan.sweep_length, sweep_n, results[TRUTH])]
    curves = {v.name: _mean_curve(results[v.name]) for v in [truth, *variants]}
    for v in sweep:
        runs = results[v.same_as or v.name]
        sweep_rows.append(_row(v, plan.sweep_length, sweep_n, runs))
        curves[v.name] = _mean_curve(runs)[: int(plan.sweep_length)]
    first = min(r.seed for r in results[TRUTH])
    frames = {
        v.name: next(r.frames for r in results[v.name] if r.seed == first)
        for v in [truth, *variants]
    }
    labels = {v.name: v.label for v in [truth, *variants, *sweep]}
    return AblationResult(plan, model.name, model.untrained, rows, sweep_rows, curves, frames,
                          labels, wall)  # fmt: skip


def _mean_curve(results: list[TaskResult]) -> np.ndarray:
    return np.mean([r.curve for r in results], axis=0)


def save_ablation(result: AblationResult, folder: Path) -> list[Path]:
    """The record of a run in `folder`: ablation.md (the tables), ablation.json, and the two
    pictures (skipped, with a ModuleNotFoundError after the rest is written, without
    matplotlib)."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "ablation.md", folder / "ablation.json"]
    paths[0].write_text("\n".join(result.lines()) + "\n")
    paths[1].write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    from streamavatar_cli.bench.ablation_plots import write_plots

    return paths + write_plots(result, folder)

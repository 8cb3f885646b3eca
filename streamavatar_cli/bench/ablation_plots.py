"""The ablation's two pictures: identity drift over time, and the same puppet at 10 s, 60 s and
180 s for each variant. matplotlib is an optional extra (`pip install -e '.[bench]'`), imported
here only; `Figure` is used without pyplot, so no GUI backend or global state is involved."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from streamavatar_cli.bench.ablation import TRUTH, AblationResult

DRIFT_PNG = "ablation.png"
FRAMES_PNG = "ablation-frames.png"
_STYLE = {
    "baseline": ("tab:red", "-"),
    "sink": ("tab:orange", "-"),
    "sink-rapr": ("tab:blue", "-"),
    "talk-only": ("tab:purple", "-"),
}


def _figure(**kwargs):
    try:
        from matplotlib.figure import Figure
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            "the ablation plots need matplotlib: pip install -e '.[bench]'", name=e.name
        ) from e
    return Figure(**kwargs)


def _seconds(curve: np.ndarray) -> np.ndarray:
    """Entry k of a drift curve is the mean over second k + 1: plot it at its end."""
    return np.arange(1, len(curve) + 1)


def drift_figure(result: AblationResult):
    """Left: every variant over the whole stream; right: the D and window sweeps over their
    length. Ground truth (the renderer itself: drift is motion and mouth colour only) is the
    black dashed reference line in both."""
    fig = _figure(figsize=(11, 4.2), layout="constrained")
    main, sweep = fig.subplots(1, 2)
    truth = result.curves[TRUTH]
    for ax, rows, length in (
        (main, result.rows, len(truth)),
        (sweep, result.sweep, int(result.plan.sweep_length)),
    ):
        ax.plot(_seconds(truth[:length]), truth[:length], "k--", label="ground truth")
        for i, row in enumerate(r for r in rows if r.name != TRUTH):
            curve = result.curves[row.name]
            colour, line = _STYLE.get(
                row.name, (f"C{i % 10}", ":" if row.kind == "trained" else "-")
            )
            ax.plot(_seconds(curve), curve, line, color=colour, label=row.label, lw=1.4)
        ax.set_xlabel("time in the stream (s)")
        ax.set_ylabel("identity drift (histogram distance)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    main.set_title("Variants", fontsize=10)
    sweep.set_title(
        f"Sweep of D and the window (first {result.plan.sweep_length:g} s)", fontsize=10
    )
    fig.suptitle(_title(result), fontsize=10)
    return fig


def frames_figure(result: AblationResult):
    """Columns: ground truth and each variant; rows: the kept times. A variant that did not
    run that long (talk-only runs for the sweep length) gets an empty cell."""
    times = sorted(result.frames[TRUTH])
    names = list(result.frames)
    fig = _figure(figsize=(1.5 * len(names) + 0.8, 1.5 * len(times) + 0.9), layout="constrained")
    axes = np.asarray(fig.subplots(len(times), len(names), squeeze=False))
    for i, t in enumerate(times):
        for j, name in enumerate(names):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            image = result.frames[name].get(t)
            if image is None:
                ax.text(0.5, 0.5, "not run\nthis long", ha="center", va="center", fontsize=7)
            else:
                ax.imshow(image)
            if i == 0:
                ax.set_title(textwrap.fill(result.labels[name], 18), fontsize=7)
            if j == 0:
                ax.set_ylabel(f"{t:g} s", fontsize=9)
    fig.suptitle(_title(result) + ", the first puppet", fontsize=8)
    return fig


def _title(result: AblationResult) -> str:
    p = result.plan
    note = " (UNTRAINED: tests the bench only)" if result.untrained else ""
    return f"{result.model}{note}: {p.puppets} held-out puppet(s), {p.size}x{p.size}"


def write_plots(result: AblationResult, folder: Path) -> list[Path]:
    """docs/ablation.png and docs/ablation-frames.png (or the same names in `folder`)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / DRIFT_PNG, folder / FRAMES_PNG]
    for fig, path in zip((drift_figure(result), frames_figure(result)), paths, strict=True):
        fig.savefig(path, dpi=110)
    return paths

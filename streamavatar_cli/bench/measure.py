"""What every benchmark shares: a result with a ratio and a target, alternating timers, and a
child process for peak memory.

Why ratios measured in one run: this tool runs on shared, noisy machines. Two things timed
minutes apart see different loads; timed alternately (A B A B ...) they see the same load, and
the median of each side drops the rounds a neighbour spoiled. Peak memory is measured in a
fresh interpreter per run, because a process's peak RSS (`ru_maxrss`) only ever grows.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

MB = 1024 * 1024
"""Bytes per MiB, for the memory lines."""


@dataclass(frozen=True)
class Result:
    """One measured ratio and the target it is held to; subclasses add the raw numbers."""

    ratio: float

    title: ClassVar[str] = ""
    target: ClassVar[float] = 1.0
    higher_is_better: ClassVar[bool] = False

    @property
    def ok(self) -> bool:
        return self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target

    def detail(self) -> str:
        """The raw numbers behind the ratio, one short line."""
        return ""

    @property
    def target_text(self) -> str:
        return f"{'>=' if self.higher_is_better else '<='} {self.target}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "title": self.title, "target": self.target_text, "ok": self.ok}

    def line(self) -> str:
        verdict = "ok" if self.ok else "MISSED"
        head = f"{self.title}: {self.ratio:.3f} (target {self.target_text}, {verdict})"
        return f"{head}; {self.detail()}"


def alternate(
    runs: dict[str, Callable[[int], object]], rounds: int, *, warmup: bool = True
) -> dict[str, list[float]]:
    """Seconds per call of each run, called in turn (A B A B ...) with the round number; with
    `warmup`, one untimed round first (it warms caches and allocators)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(-1 if warmup else 0, rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run(max(i, 0))
            if i >= 0:
                times[name].append(time.perf_counter() - start)
    return times


def median_ms(seconds: list[float]) -> float:
    return 1e3 * statistics.median(seconds)


def max_abs_diff(a: Any, b: Any) -> float:
    return float((a.float() - b.float()).abs().max())


# ---- peak memory in a child process -------------------------------------------------------

CHILD_MODULE = "streamavatar_cli.bench.child"


def peak_rss_bytes() -> int:
    """This process's peak resident set so far.

    Linux: `VmHWM` of /proc/self/status. Not `ru_maxrss`: Linux carries that over fork and exec,
    so a child started by a 1 GB parent would report at least 1 GB whatever it did itself.
    Elsewhere `ru_maxrss` (bytes on macOS, KiB on the BSDs).
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


# glibc moves its mmap threshold up as large blocks are freed, after which big temporaries come
# from a heap that fragments: identical runs then peak up to ~10% apart. A fixed threshold hands
# every block over 128 KiB straight back to the system, so the peak is the memory in use.
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def run_child(task: str, timeout: float = 1800.0, **kwargs: Any) -> dict[str, Any]:
    """Run one task of `child.py` in a fresh interpreter and return its JSON."""
    command = [sys.executable, "-m", CHILD_MODULE, task, json.dumps(kwargs)]
    env = {**CHILD_ENV, **os.environ}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"benchmark child {task!r} failed (exit {done.returncode}): {tail[0]}")
    return json.loads(done.stdout.strip().splitlines()[-1])

"""`streamavatar bench`: the performance claims of ARCHITECTURE section 8, as measured ratios.

Each function measures one claim and returns a small dataclass (`Result`): the raw numbers,
the ratio, its target and whether it was met. `run_suite` runs them at one of three sizes:
`quick` (seconds, a smoke run), `default` (a few minutes, `make bench`), `full` (longer runs,
less noise). Ratios are measured in one run with the two sides alternating; tests check the
structure of these results, never the numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from streamavatar_cli.bench.ablation import AblationPlan, AblationResult, run_ablation
from streamavatar_cli.bench.flops import (
    FlopsReport,
    dit_chunk_flops,
    flops_report,
    vae_decode_flops,
)
from streamavatar_cli.bench.latency import Latency, live_latency
from streamavatar_cli.bench.measure import Result
from streamavatar_cli.bench.parity import dit_vs_diffusers, vae_memory, vae_vs_diffusers
from streamavatar_cli.bench.render import pipeline_speedup, render_speed
from streamavatar_cli.bench.stream import cache_speedup, stream_flat_cost, stream_memory

__all__ = [
    "AblationPlan",
    "AblationResult",
    "FlopsReport",
    "Latency",
    "Result",
    "Skipped",
    "cache_speedup",
    "dit_chunk_flops",
    "dit_vs_diffusers",
    "flops_report",
    "live_latency",
    "pipeline_speedup",
    "render_speed",
    "run_ablation",
    "run_suite",
    "script_main",
    "stream_flat_cost",
    "stream_memory",
    "vae_decode_flops",
    "vae_memory",
    "vae_vs_diffusers",
]

Size = Literal["quick", "default", "full"]

# Per size, the keyword arguments of each benchmark; an empty dict means its defaults.
SUITE: dict[str, dict[Size, dict[str, Any]]] = {
    "stream_flat_cost": {
        "quick": {"dim": 64, "layers": 2, "latent": (8, 8), "rounds": 5},
        "default": {},
        "full": {"dim": 256, "layers": 4, "rounds": 15},
    },
    "stream_memory": {
        "quick": {"resolution": 32},
        "default": {},
        "full": {"resolution": 256},
    },
    "cache_speedup": {
        "quick": {"dim": 128, "latent": (24, 24), "chunks": 8},
        "default": {},
        "full": {"chunks": 24},
    },
    "dit_vs_diffusers": {
        "quick": {"dim": 128, "layers": 2, "latent": (3, 8, 8), "rounds": 3},
        "default": {},
        "full": {"rounds": 11},
    },
    "vae_vs_diffusers": {
        "quick": {"decoder_dim": 16, "latent": (2, 4, 4), "rounds": 2},
        "default": {},
        "full": {"latent": (3, 16, 16), "rounds": 7},
    },
    "vae_memory": {
        "quick": {"decoder_dim": 16, "frames": 2, "latent_hw": (4, 4)},
        "default": {},
        "full": {"frames": 16, "latent_hw": (24, 24)},
    },
    "pipeline_speedup": {
        "quick": {"seconds": 2.0, "size": 128, "rounds": 1},
        "default": {},
        "full": {"seconds": 10.0, "rounds": 3},
    },
    "render_speed": {
        "quick": {"seconds": 2.0, "size": 128},
        "default": {},
        "full": {"seconds": 60.0},
    },
}

BENCHMARKS: dict[str, Callable[..., Result]] = {
    "stream_flat_cost": stream_flat_cost,
    "stream_memory": stream_memory,
    "cache_speedup": cache_speedup,
    "dit_vs_diffusers": dit_vs_diffusers,
    "vae_vs_diffusers": vae_vs_diffusers,
    "vae_memory": vae_memory,
    "pipeline_speedup": pipeline_speedup,
    "render_speed": render_speed,
}


@dataclass(frozen=True)
class Skipped:
    """A benchmark that could not run here, and why (e.g. diffusers is not installed)."""

    name: str
    reason: str
    ok: bool = True

    def line(self) -> str:
        return f"{self.name}: skipped ({self.reason})"

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.name, "skipped": self.reason}


def run_suite(
    size: Size = "default",
    on_result: Callable[[Result | Skipped], None] | None = None,
    names: Sequence[str] | None = None,
) -> list[Result | Skipped]:
    """The benchmarks `names` (default: all, in `BENCHMARKS` order) at `size`; `on_result`
    sees each result as it arrives."""
    if size not in ("quick", "default", "full"):
        raise ValueError(f"size={size!r}; allowed: 'quick', 'default', 'full'")
    unknown = sorted(set(names or ()) - set(BENCHMARKS))
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; available: {list(BENCHMARKS)}")
    results: list[Result | Skipped] = []
    for name in names or BENCHMARKS:
        try:
            result: Result | Skipped = BENCHMARKS[name](**SUITE[name][size])
        except ModuleNotFoundError as e:
            result = Skipped(name, f"{e.name} is not installed; pip install -e '.[test]'")
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def script_main(names: Sequence[str], description: str | None) -> None:
    """The command line of the scripts in `benchmarks/`: `--size`, `--json`."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--size", choices=("quick", "default", "full"), default="default")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    show = None if args.json else (lambda result: print(result.line(), flush=True))
    results = run_suite(args.size, show, names)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))

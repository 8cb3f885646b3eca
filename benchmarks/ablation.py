"""The ablation bench (issue 14): reference sink, RAPR and the listen branch over long streams on
held-out puppets, the same function as `streamavatar bench --ablation`. Writes the tables
(ablation.md, ablation.json) and the pictures (ablation.png, ablation-frames.png) to docs/."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from streamavatar_cli.bench.ablation import (
    AblationPlan,
    parse_variant_model,
    run_ablation,
    save_ablation,
)
from streamavatar_cli.errors import Terminated, raise_on_sigterm

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# What `make train-tiny-ablation` writes: used when present and no --variant-model is given.
TRAINED_VARIANTS = (
    ("trained-no-rapr", ROOT / "runs/tiny/ode-init-no-rapr"),
    ("trained-no-sink", ROOT / "runs/tiny/ode-init-no-sink"),
)


def trained_variants(given: list[str]) -> tuple[tuple[str, str], ...]:
    if given:
        return tuple(parse_variant_model(t) for t in given)
    found = tuple((name, str(f)) for name, f in TRAINED_VARIANTS if (f / "config.json").is_file())
    if found:
        print(f"trained variants: {', '.join(n for n, _ in found)}", file=sys.stderr)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", help="model folder or name (default: the bundled model)")
    parser.add_argument("--seconds", type=float, help="stream length (default 180)")
    parser.add_argument("--puppets", type=int, help="held-out puppets (default 2)")
    parser.add_argument("--sweep-seconds", type=float, help="talk-only and sweep length (60)")
    parser.add_argument("--jobs", type=int, help="worker processes (default: one per core)")
    parser.add_argument(
        "--variant-model", action="append", default=[], metavar="NAME=FOLDER",
        help="a student trained differently (repeat; default: what `make train-tiny-ablation` "
        "wrote to runs/tiny/, if anything)",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="smoke run, under 2 minutes")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--out", type=Path, default=DOCS, help="where to write (default docs/)")
    args = parser.parse_args()
    raise_on_sigterm()  # `kill` ends the worker pool too, not only this process
    try:
        settings = {
            "seconds": args.seconds, "puppets": args.puppets, "jobs": args.jobs,
            "sweep_seconds": args.sweep_seconds,
            "trained": trained_variants(args.variant_model),
        }  # fmt: skip
        settings = {k: v for k, v in settings.items() if v is not None}
        plan = AblationPlan.quick(**settings) if args.quick else AblationPlan(**settings)
        result = run_ablation(
            plan.validate(), args.model, lambda p: print(p.line(), file=sys.stderr, flush=True)
        )
    except ValueError as e:  # bad values and model errors (ModelError is a ValueError)
        parser.exit(2, f"error: {e}\n")
    except Terminated:
        parser.exit(143, "terminated (SIGTERM): nothing written\n")
    print(json.dumps(result.to_dict()) if args.json else "\n".join(result.lines()))
    paths = save_ablation(result, args.out)
    print(f"wrote {', '.join(map(str, paths))}", file=sys.stderr)


if __name__ == "__main__":
    main()

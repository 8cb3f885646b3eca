"""Entry point of a benchmark child process: `python -m streamavatar_cli.bench.child TASK JSON`.

Runs one memory task with the JSON keyword arguments and prints one JSON line: the task's own
numbers plus `peak_rss_bytes` (the whole process) and `setup_peak_rss_bytes` (the peak once the
models were built, before the measured work), so the work's own growth can be told apart from
the interpreter, torch and the weights.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any


def _tasks() -> dict[str, Callable[..., dict[str, Any]]]:
    from streamavatar_cli.bench.parity import vae_memory_task
    from streamavatar_cli.bench.stream import stream_memory_task

    return {"stream": stream_memory_task, "vae": vae_memory_task}


def main(argv: list[str]) -> None:
    import torch

    # Memory is measured here, not speed: one thread keeps a run short on a loaded machine
    # (two OpenMP threads on one free core can be 50x slower) and has no effect on the peak
    # beyond a few MB of per-thread scratch.
    torch.set_num_threads(1)
    task, kwargs = argv[0], json.loads(argv[1])
    result = _tasks()[task](**kwargs)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])

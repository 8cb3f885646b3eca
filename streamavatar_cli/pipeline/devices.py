"""Device choice and the two-device pipeline (ARCHITECTURE section 8).

With the DiT and the VAE on different devices (or on one multi-core CPU), the DiT (main thread)
pushes each chunk's latents into a bounded queue and a worker thread decodes and writes them, so
the two overlap. An error on either side stops both and is raised once, in the main thread;
Ctrl-C (which Python delivers to the main thread) stops the worker too. Inline, the same code
runs in one thread.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable
from typing import TypeVar

import torch

T = TypeVar("T")

_DONE = object()


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity on Linux, else all)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def pipeline_by_default(dit_device: torch.device, vae_device: torch.device) -> bool:
    """Decode in a second thread when the DiT and the VAE are on different devices, or share a
    CPU with at least 2 cores: there the VAE is most of the work and it overlaps the DiT's
    (the bundled model on 2 cores: RTF 1.14 inline, 0.74 pipelined; docs/design.md)."""
    if dit_device != vae_device:
        return True
    return dit_device.type == "cpu" and usable_cores() >= 2


def parse_device(name: str | None) -> torch.device:
    """A torch device from a user string; CUDA requested without CUDA is a clear error."""
    name = name or default_device()
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} requested but this torch has no CUDA; use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) present"
            )
    elif device.type not in ("cpu", "mps"):
        raise ValueError(f"device {name!r} is not supported; use cpu or cuda[:N]")
    return device


def parse_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """fp32 on CPU, bf16 on GPU unless asked otherwise."""
    table = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
             "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}  # fmt: skip
    if name is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in table:
        raise ValueError(f"unknown dtype {name!r}; use fp32, bf16 or fp16")
    return table[name]


def run_pipelined(
    items: Iterable[T], consume: Callable[[T], None], *, pipelined: bool, depth: int = 2
) -> None:
    """Feed every item of `items` (produced lazily, in this thread) to `consume`.

    `pipelined`: `consume` runs in a worker thread behind a queue of `depth` items, so producing
    item n+1 overlaps consuming item n. Otherwise everything runs inline. Either way the first
    error raised by either side is re-raised here, and the other side stops.
    """
    if not pipelined:
        for item in items:
            consume(item)
        return
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    failure: list[BaseException] = []

    def worker() -> None:
        try:
            while True:
                item = handoff.get()
                if item is _DONE or stop.is_set():
                    return
                consume(item)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            failure.append(e)
            stop.set()

    thread = threading.Thread(target=worker, name="streamavatar-decode", daemon=True)
    thread.start()
    try:
        for item in items:
            if not _put(handoff, item, stop):
                break
        _put(handoff, _DONE, stop)
    except BaseException:
        stop.set()
        _drain(handoff)
        handoff.put(_DONE)
        thread.join()
        raise
    thread.join()
    if failure:
        raise failure[0]


def _put(handoff: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put without blocking forever: give up when the worker has stopped."""
    while not stop.is_set():
        try:
            handoff.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _drain(handoff: queue.Queue) -> None:
    while True:
        try:
            handoff.get_nowait()
        except queue.Empty:
            return

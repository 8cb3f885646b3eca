"""The producer/consumer runner behind the two-device DiT/VAE pipeline."""

from __future__ import annotations

import threading

import pytest
import torch

from streamavatar_cli.pipeline.devices import parse_device, parse_dtype, run_pipelined


@pytest.mark.parametrize("pipelined", [False, True])
def test_every_item_is_consumed_in_order(pipelined):
    seen: list[int] = []
    run_pipelined(range(50), seen.append, pipelined=pipelined)
    assert seen == list(range(50))


def test_consumer_runs_in_another_thread_and_overlaps():
    main = threading.get_ident()
    threads: set[int] = set()
    consumed_before_last_produced: list[bool] = []
    consumed = threading.Event()

    def produce():
        for i in range(5):
            yield i
            if i == 3:  # by the time the 4th item is produced, an earlier one was consumed
                consumed_before_last_produced.append(consumed.wait(timeout=5))

    def consume(item):
        threads.add(threading.get_ident())
        consumed.set()

    run_pipelined(produce(), consume, pipelined=True)
    assert threads and main not in threads
    assert consumed_before_last_produced == [True]


def test_consumer_error_stops_the_producer_and_is_raised_once():
    produced: list[int] = []

    def produce():
        for i in range(1000):
            produced.append(i)
            yield i

    def consume(item):
        if item == 3:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        run_pipelined(produce(), consume, pipelined=True, depth=2)
    assert len(produced) < 20  # stopped soon after the failure, not after 1000 items


@pytest.mark.parametrize("error", [RuntimeError("dit failed"), KeyboardInterrupt()])
def test_producer_error_stops_the_consumer(error):
    consumed: list[int] = []

    def produce():
        yield 1
        yield 2
        raise error

    with pytest.raises(type(error)):
        run_pipelined(produce(), consumed.append, pipelined=True)
    assert not any(t.name == "streamavatar-decode" for t in threading.enumerate())


def test_device_and_dtype_parsing():
    assert parse_device("cpu") == torch.device("cpu")
    assert parse_dtype(None, torch.device("cpu")) == torch.float32
    assert parse_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        parse_dtype("fp8", torch.device("cpu"))
    with pytest.raises(ValueError, match="device"):
        parse_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            parse_device("cuda:1")

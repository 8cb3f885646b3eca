"""`streamavatar bench --ablation` (issue 14): it runs on short streams with the untrained
random-tiny model and reports every variant and sweep entry, its JSON parses, bad flags give one
line. Never asserts on the metrics themselves (an untrained model's numbers mean nothing); only
on invariants of the bookkeeping (a sweep entry equal to the default reads the default's run,
the first n frames of a stream are the stream of n frames)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_bad_input import run_in_process

from streamavatar_cli.bench.ablation import TRUTH, AblationPlan, run_ablation, save_ablation
from streamavatar_cli.pipeline.model import StreamAvatarModel, random_tiny_model, save_model
from streamavatar_cli.puppet.evaluate import (
    EVAL_SEED_BASE,
    estimate_stream,
    puppet_case,
    score_stream,
)

VARIANTS = ["baseline", "sink", "sink-rapr", "talk-only"]
SWEEP = ["D=4", "D=6", "D=10", "D=16", "window=3", "window=6", "window=9"]
TINY = {"seconds": 2.0, "sweep_seconds": 1.0, "puppets": 1, "size": 64, "jobs": 1}


@pytest.fixture(scope="module")
def no_rapr_folder(tmp_path_factory):
    """A 'student trained without RAPR': random-tiny whose config says rapr = false."""
    model = random_tiny_model()
    config = dataclasses.replace(model.config, stream=model.config.stream.replace(rapr=False))
    folder = tmp_path_factory.mktemp("no-rapr")
    save_model(StreamAvatarModel(config, model.dit, model.vae, source="test"), folder)
    return folder


@pytest.fixture(scope="module")
def result(no_rapr_folder):
    plan = AblationPlan(**TINY, trained=(("no-rapr", str(no_rapr_folder)),))
    return run_ablation(plan, "random-tiny")


def test_every_variant_and_sweep_entry_is_reported(result):
    assert [r.name for r in result.rows] == [TRUTH, *VARIANTS, "no-rapr"]
    assert [r.name for r in result.sweep] == [TRUTH, *SWEEP]
    assert [r.kind for r in result.rows] == ["reference", *["inference"] * 4, "trained"]
    assert {r.seconds for r in result.rows if r.name != "talk-only"} == {2.0}
    assert all(r.seconds == 1.0 for r in result.sweep)
    for row in result.rows[1:] + result.sweep[1:]:
        assert {"lip_sync", "listen_motion", "mouth_listen", "psnr", "ssim", "rtf"} <= set(
            row.metrics
        )
        assert row.metrics["rtf"] is not None and row.metrics["psnr"] is not None
    text = "\n".join(result.lines())
    assert "untrained" in text
    for row in result.rows + result.sweep:
        assert row.label in text


def test_rows_run_with_their_settings(result):
    stream = {r.name: r.stream for r in result.rows + result.sweep}
    assert stream[TRUTH] is None
    assert (stream["baseline"]["sink"], stream["baseline"]["rapr"]) == (False, False)
    assert (stream["sink"]["sink"], stream["sink"]["rapr"]) == (True, False)
    assert stream["no-rapr"]["rapr"] is False  # the trained model's own config.json
    assert [stream[f"D={d}"]["rapr_max_distance"] for d in (4, 6, 10, 16)] == [4, 6, 10, 16]
    assert stream["window=9"]["rapr_max_distance"] == 13  # sink 4 + window 9: no collision
    notes = {r.name: r.note for r in result.sweep}
    assert notes["D=4"] and notes["D=6"] and not notes["D=10"]


def test_sweep_entries_equal_to_the_default_read_its_run(result):
    sweep = {r.name: r for r in result.sweep}
    assert sweep["D=10"].per_puppet == sweep["window=6"].per_puppet
    default = next(r for r in result.rows if r.name == "sink-rapr")
    assert default.seconds > sweep["D=10"].seconds  # scored on its prefix
    np.testing.assert_array_equal(result.curves["D=10"], result.curves["sink-rapr"][:1])


def test_curves_and_frames(result):
    assert all(len(result.curves[r.name]) == int(r.seconds) for r in result.rows)
    assert set(result.frames) == {TRUTH, *VARIANTS, "no-rapr"}
    assert set(result.frames[TRUTH]) == {2.0} and result.frames[TRUTH][2.0].shape == (64, 64, 3)
    assert result.frames["talk-only"] == {}  # it ran for 1 s only


def test_a_prefix_of_a_stream_is_the_shorter_stream():
    """What lets the sweep and talk-only use the first seconds of the same streams."""
    model, case = random_tiny_model(), puppet_case(EVAL_SEED_BASE, 2.0, (64, 64))
    full = estimate_stream(model, case)
    short = estimate_stream(model, case, n_frames=25, keep_frames=(24,))
    np.testing.assert_array_equal(short.estimates.appearance, full.estimates.appearance[:25])
    assert short.n_frames == 25 and set(short.frames) == {24}
    scores = score_stream(model, case)
    for key, value in full.scores(case).items():
        if key not in ("rtf", "first_frame_delay"):
            assert value == pytest.approx(scores[key]), key


def test_save_writes_tables_and_pictures(result, tmp_path):
    pytest.importorskip("matplotlib")
    paths = save_ablation(result, tmp_path)
    assert [p.name for p in paths] == [
        "ablation.md", "ablation.json", "ablation.png", "ablation-frames.png",
    ]  # fmt: skip
    assert all(p.stat().st_size > 0 for p in paths)
    data = json.loads(paths[1].read_text())
    assert [r["name"] for r in data["sweep"]] == [TRUTH, *SWEEP]


def test_cli_json_through_worker_processes(tmp_path):
    code, out, err = dataclasses.astuple(run_in_process([
        "bench", "--ablation", "--model", "random-tiny", "--seconds", "1", "--puppets", "1",
        "--jobs", "2", "--json", "--out", str(tmp_path),
    ]))  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert [r["name"] for r in data["rows"]] == [TRUTH, *VARIANTS]
    assert [r["name"] for r in data["sweep"]] == [TRUTH, *SWEEP]
    assert data["untrained"] is True and data["plan"]["sweep_seconds"] == 1.0
    assert "[1/" in err and (tmp_path / "ablation.json").is_file()


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["--seconds", "3"], 2, "only with --ablation"),
        (["--variant-model", "a=b"], 2, "only with --ablation"),
        (["--ablation", "--full"], 2, "excludes --full"),
        (["--ablation", "--puppets", "0"], 2, "puppets=0"),
        (["--ablation", "--seconds", "10", "--sweep-seconds", "20"], 2, "sweep seconds=20"),
        (["--ablation", "--variant-model", "no-rapr"], 2, "expected NAME=FOLDER"),
        (["--ablation", "--variant-model", "sink=x"], 2, "trained variant name 'sink'"),
        (["--ablation", "--model", "random-tiny", "--variant-model", "x=/no/such"], 3,
         "trained variant 'x': no model folder"),
    ],
)  # fmt: skip
def test_bad_flags_give_one_line(args, code, words):
    got, out, err = dataclasses.astuple(run_in_process(["bench", *args]))
    assert got == code and out == ""
    assert len(err.strip().splitlines()) == 1 and words in err, err


def child_pids(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc (Linux)")
def test_sigterm_ends_the_worker_pool_too(tmp_path):
    """`kill` of the bench (a scheduler, `timeout`) takes its workers with it and writes nothing."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "ablation.py"
    proc = subprocess.Popen(
        [sys.executable, str(script), "--model", "random-tiny", "--seconds", "30",
         "--puppets", "2", "--jobs", "2", "--out", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(workers := child_pids(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(workers) >= 2, "the pool never started"
        time.sleep(1.0)  # the workers are busy on their first streams
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 143 and "terminated (SIGTERM)" in err, err
    deadline = time.monotonic() + 10
    while any(map(alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(map(alive, workers)), "worker processes outlived the bench"
    assert list(tmp_path.iterdir()) == []

"""Ctrl-C (SIGINT) during `render` and `batch`, sent to a real process group as a terminal does.

`render` must exit 130 with one line saying what happened, kill its ffmpeg, and leave neither
the output nor a temp file. `batch` must keep the videos it finished (complete and playable),
leave nothing half-written, and a rerun must skip those and render the rest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
from test_bad_input import run_in_process, speech

from streamavatar_cli.cli import INTERRUPTED_MESSAGE, TERMINATED_MESSAGE
from streamavatar_cli.config import AUDIO_SAMPLE_RATE as SR
from streamavatar_cli.video import probe_media

pytestmark = pytest.mark.skipif(os.name != "posix", reason="process groups and SIGINT are POSIX")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def write_speech(path: Path, seconds: float) -> Path:
    sf.write(path, speech(seconds), SR)
    return path


def start(*args: str) -> subprocess.Popen:
    """The CLI in its own process group, so the SIGINT reaches it as a terminal's Ctrl-C would."""
    return subprocess.Popen(
        [sys.executable, "-m", "streamavatar_cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"exited early ({proc.returncode}): {proc.communicate()[1]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the render to start")
        time.sleep(0.02)


def interrupt(proc: subprocess.Popen) -> tuple[str, str]:
    os.killpg(proc.pid, signal.SIGINT)
    return proc.communicate(timeout=60)


def temp_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp*"))


def processes_mentioning(folder: Path) -> list[str]:
    """Command lines of running processes that name `folder` (an orphaned ffmpeg would)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # exited meanwhile
        if str(folder) in text:
            found.append(text)
    return found


def error_lines(stderr: str) -> list[str]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert lines and lines[-1] == INTERRUPTED_MESSAGE, stderr
    return lines


def start_long_render(tmp_path: Path, *flags: str) -> tuple[subprocess.Popen, Path, Path]:
    """A 40 s render, returned once ffmpeg is encoding (its temp file exists)."""
    audio = write_speech(tmp_path / "long.wav", 40.0)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    output = out_dir / "video.mp4"
    proc = start(
        "render", "-i", str(EXAMPLES / "astronaut.png"), "-a", str(audio), "-o", str(output),
        "--model", "random-tiny", "--resolution", "64x64", *flags,
    )  # fmt: skip
    wait_for(lambda: list(out_dir.glob(".video.mp4.*.tmp.mp4")), proc)
    time.sleep(0.3)
    return proc, out_dir, output


def assert_nothing_left(out_dir: Path, output: Path) -> None:
    assert not output.exists()
    assert temp_files(out_dir) == []
    assert processes_mentioning(out_dir) == [], "ffmpeg was left running"


@pytest.mark.parametrize("pipelined", [False, True], ids=["one-thread", "pipelined"])
def test_sigint_during_render_exits_130_and_leaves_nothing(tmp_path, pipelined):
    flags = ["--pipeline"] if pipelined else ["--no-pipeline", "--quiet"]
    proc, out_dir, output = start_long_render(tmp_path, *flags)
    _, stderr = interrupt(proc)
    assert proc.returncode == 130, stderr
    lines = error_lines(stderr)
    if not pipelined:  # --quiet: the message is all there is
        assert lines == [INTERRUPTED_MESSAGE]
    assert_nothing_left(out_dir, output)


def test_sigterm_during_render_exits_143_and_leaves_nothing(tmp_path):
    """`timeout`, `kill` and schedulers send SIGTERM to the process alone, not its group."""
    proc, out_dir, output = start_long_render(tmp_path, "--pipeline", "--quiet")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if line.strip()] == [TERMINATED_MESSAGE]
    assert_nothing_left(out_dir, output)


def test_sigint_during_batch_keeps_finished_videos_and_a_rerun_resumes(tmp_path):
    write_speech(tmp_path / "short.wav", 0.5)
    write_speech(tmp_path / "long.wav", 6.0)
    (tmp_path / "face.png").symlink_to(EXAMPLES / "astronaut.png")
    manifest = tmp_path / "jobs.csv"
    manifest.write_text(
        "id,image,agent_audio,resolution\n"
        "first,face.png,short.wav,64x64\n"
        "second,face.png,long.wav,64x64\n"
        "third,face.png,short.wav,64x64\n"
    )
    out_dir = tmp_path / "out"
    args = ("batch", str(manifest), "--out-dir", str(out_dir), "--model", "random-tiny")
    proc = start(*args)
    wait_for(lambda: list(out_dir.glob(".second.mp4.*.tmp.mp4")), proc)
    time.sleep(0.2)
    _, stderr = interrupt(proc)
    assert proc.returncode == 130, stderr
    error_lines(stderr)
    assert sorted(p.name for p in out_dir.iterdir()) == ["first.mp4"]  # no temp, no partial
    assert probe_media(out_dir / "first.mp4").n_frames == 13  # complete and playable
    finished = (out_dir / "first.mp4").read_bytes()

    rerun = run_in_process([*args, "--json"])  # this process's CPU kernels are warm already
    assert rerun.code == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    assert [(j["id"], j["status"]) for j in report["jobs"]] == [
        ("first", "skipped"),
        ("second", "done"),
        ("third", "done"),
    ]
    assert (out_dir / "first.mp4").read_bytes() == finished
    assert probe_media(out_dir / "second.mp4").n_frames == 150
    assert probe_media(out_dir / "third.mp4").n_frames == 13
    assert temp_files(out_dir) == []

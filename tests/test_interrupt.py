"""Ctrl-C (SIGINT) during `render` and `batch`, sent to a real process group as a terminal does.

`render` must exit 130 with one line saying what happened, kill its ffmpeg, and leave neither
the output nor a temp file. `batch` must keep the videos it finished (complete and playable),
leave nothing half-written, and a rerun must skip those and render the rest.

The children get SIGINT at its default disposition explicitly: a shell starts background jobs
(`make test &`, nohup, some CI runners) with SIGINT ignored, children inherit that, and
streamavatar deliberately keeps it ignored then (docs/design.md, "Decision (SIGINT ignored)").
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

from streamavatar_cli.cli import INTERRUPTED_MESSAGE, LIVE_INTERRUPTED_MESSAGE, TERMINATED_MESSAGE
from streamavatar_cli.config import AUDIO_SAMPLE_RATE as SR
from streamavatar_cli.video import probe_media

pytestmark = pytest.mark.skipif(os.name != "posix", reason="process groups and SIGINT are POSIX")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def write_speech(path: Path, seconds: float) -> Path:
    sf.write(path, speech(seconds), SR)
    return path


def default_sigint() -> None:
    """In the child before exec: SIGINT as an interactive shell gives it, whatever we inherited."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(*args: str, sigint=default_sigint, **kw) -> subprocess.Popen:
    """The CLI in its own process group, so the SIGINT reaches it as a terminal's Ctrl-C would."""
    options = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.Popen(
        [sys.executable, "-m", "streamavatar_cli", *args],
        start_new_session=True,
        preexec_fn=sigint,
        **{**options, **kw},
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


def environments_mentioning(folder: Path) -> list[int]:
    """Processes whose environment names `folder`: children of a CLI started with MARK set."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if str(folder).encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:
            continue
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


def live_render_waiting_for_audio(tmp_path: Path, sigint=default_sigint) -> subprocess.Popen:
    """`render -a -` with its stdin kept open: it renders what came and waits for more."""
    marker = tmp_path / "marker"
    proc = start(
        "render", "-i", str(EXAMPLES / "astronaut.png"), "-a", "-", "--audio-format", "s16le",
        "-o", str(tmp_path / "live.ts"), "--model", "random-tiny", "--resolution", "64x64",
        "--quiet", sigint=sigint, stdin=subprocess.PIPE, env={**os.environ, "MARK": str(marker)},
    )  # fmt: skip
    proc.stdin.write("\0" * 2 * 16000)  # 1 s of silence: a few chunks, then waiting
    proc.stdin.flush()
    wait_for(
        lambda: (tmp_path / "live.ts").exists() and (tmp_path / "live.ts").stat().st_size, proc
    )
    return proc


def test_sigint_while_waiting_for_live_audio_keeps_what_was_sent(tmp_path):
    proc = live_render_waiting_for_audio(tmp_path)
    _, stderr = interrupt(proc)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if line.strip()] == [LIVE_INTERRUPTED_MESSAGE]
    assert probe_media(tmp_path / "live.ts").n_frames >= 1  # a valid stream of what was sent
    assert processes_mentioning(tmp_path) == [], "ffmpeg was left running"
    assert environments_mentioning(tmp_path) == [], "the audio decoder was left running"


def test_started_with_sigint_ignored_it_stays_ignored_and_sigterm_still_stops_it(tmp_path):
    """The shell's "background job: ignore the terminal's Ctrl-C" is respected."""
    ignore = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731
    proc = live_render_waiting_for_audio(tmp_path, sigint=ignore)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(1.0)
    assert proc.poll() is None, "SIGINT stopped a process that was started with it ignored"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert processes_mentioning(tmp_path) == []

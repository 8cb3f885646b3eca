"""MP4 writer and probe: exact frame and sample counts, frame conversion, cleanup on every failure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from streamavatar_cli.config import AUDIO_SAMPLE_RATE, FPS
from streamavatar_cli.errors import InputError, OutputError
from streamavatar_cli.video import writer as writer_module
from streamavatar_cli.video.probe import probe_media, read_video_frames
from streamavatar_cli.video.writer import Mp4Writer, check_output_path, frames_to_uint8

W, H = 64, 48
AUDIO_TOLERANCE_S = 1 / AUDIO_SAMPLE_RATE
"""Measured error is 0 samples with the bundled ffmpeg: the mp4 edit list hides the AAC
encoder delay and the padding of the last frame. The contract is one AAC frame (1024 samples,
64 ms at 16 kHz); the test holds the measured behaviour, within one sample of rounding."""


def tone(seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * AUDIO_SAMPLE_RATE)) / AUDIO_SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def vae_chunks(n_frames: int) -> list[torch.Tensor]:
    """Frames the way the VAE decodes them: [3, 1, H, W] first, then [3, 12, H, W] chunks."""
    video = torch.linspace(-1, 1, n_frames)[None, :, None, None].expand(3, n_frames, H, W)
    return [video[:, :1]] + list(video[:, 1:].split(12, dim=1))


def leftovers(directory: Path, keep: str | None = None) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != keep)


def test_frames_and_audio_are_exact(tmp_path):
    out = tmp_path / "out.mp4"
    with Mp4Writer(out, W, H, audio=tone(1.48), total_frames=37) as writer:
        for chunk in vae_chunks(37):
            writer.write(chunk)
    info = probe_media(out)
    assert (info.width, info.height, info.fps) == (W, H, FPS)
    assert info.n_frames == 37 and info.video_duration == pytest.approx(1.48)
    assert (info.video_codec, info.pix_fmt) == ("h264", "yuv420p")
    assert (info.audio_codec, info.audio_rate, info.audio_channels) == ("aac", 16000, 1)
    assert abs(info.audio_duration - 1.48) <= AUDIO_TOLERANCE_S
    assert leftovers(tmp_path) == ["out.mp4"]


@pytest.mark.parametrize("audio_seconds", [1.0, 2.3456])
def test_audio_is_not_cut_or_padded_to_the_video(tmp_path, audio_seconds):
    out = tmp_path / "out.mp4"
    audio = tone(audio_seconds)
    with Mp4Writer(out, W, H, audio=audio, total_frames=37) as writer:
        writer.write(np.zeros((37, H, W, 3), np.uint8))
    info = probe_media(out)
    assert info.n_frames == 37
    assert abs(info.audio_duration - len(audio) / AUDIO_SAMPLE_RATE) <= AUDIO_TOLERANCE_S


def test_video_without_audio(tmp_path):
    out = tmp_path / "silent.mp4"
    with Mp4Writer(out, W, H) as writer:
        writer.write(np.zeros((5, H, W, 3), np.uint8))
    info = probe_media(out)
    assert info.n_frames == 5 and info.audio_codec is None and info.audio_duration is None


def test_colours_survive_the_round_trip(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0), (128, 64, 32)]
    frames = np.stack([np.full((H, W, 3), c, np.uint8) for c in colours])
    with Mp4Writer(tmp_path / "c.mp4", W, H, crf=0) as writer:
        writer.write(frames)
    decoded = read_video_frames(tmp_path / "c.mp4")
    assert decoded.shape == frames.shape
    # yuv420p at limited range is not lossless even at crf 0: a few levels of rounding.
    assert np.abs(decoded.astype(int) - frames.astype(int)).max() <= 4


def test_total_frames_drops_the_extra(tmp_path):
    out = tmp_path / "trim.mp4"
    with Mp4Writer(out, W, H, total_frames=10) as writer:
        assert writer.write(np.zeros((12, H, W, 3), np.uint8)) == 10
        assert writer.write(np.zeros((4, H, W, 3), np.uint8)) == 0
    assert probe_media(out).n_frames == 10


def test_too_few_frames_is_an_error_and_leaves_nothing(tmp_path):
    with pytest.raises(OutputError, match="only 20 of 37 frames"):
        with Mp4Writer(tmp_path / "short.mp4", W, H, audio=tone(1.48), total_frames=37) as w:
            w.write(np.zeros((20, H, W, 3), np.uint8))
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_exception_inside_with_kills_ffmpeg_and_cleans_up(tmp_path, error):
    out = tmp_path / "out.mp4"
    with pytest.raises(error):
        with Mp4Writer(out, W, H, audio=tone(1.0), total_frames=25) as writer:
            writer.write(np.zeros((5, H, W, 3), np.uint8))
            proc = writer._proc
            # Work in progress is hidden: ".out.mp4.<random>.tmp.mp4" and ".tmp.wav" only.
            names = leftovers(tmp_path)
            assert names and all(n.startswith(".out.mp4.") and ".tmp" in n for n in names)
            assert not out.exists()
            raise error("stop")
    assert proc.poll() is not None  # ffmpeg is gone
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(os.name != "posix", reason="sessions are POSIX")
def test_ffmpeg_does_not_receive_the_terminal_ctrl_c(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with Mp4Writer(tmp_path / "out.mp4", W, H) as writer:
            assert os.getsid(writer._proc.pid) != os.getsid(0)
            raise KeyboardInterrupt
    assert leftovers(tmp_path) == []


SIGINT_CHILD = """
import sys
import numpy as np
import soundfile as sf
from streamavatar_cli.video.writer import Mp4Writer

with Mp4Writer(sys.argv[1], 64, 48, audio=np.zeros(16000, np.float32)) as writer:
    writer.write(np.zeros((1, 48, 64, 3), np.uint8))
    print(writer._proc.pid, flush=True)
    while True:  # blocks in the pipe write most of the time, where Ctrl-C usually lands
        writer.write(np.zeros((25, 48, 64, 3), np.uint8))
"""


@pytest.mark.skipif(os.name != "posix", reason="signals are POSIX")
def test_real_sigint_while_writing_cleans_up(tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-c", SIGINT_CHILD, str(tmp_path / "out.mp4")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # explicit: under `make test &` or nohup the child would inherit SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    ffmpeg_pid = int(child.stdout.readline())
    time.sleep(0.3)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=30)
    assert child.returncode != 0 and "KeyboardInterrupt" in stderr
    assert leftovers(tmp_path) == []
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left running
        os.kill(ffmpeg_pid, 0)


def test_ffmpeg_failure_quotes_its_stderr(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "ffmpeg"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'first line' >&2\necho 'x264: encoder exploded' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(writer_module, "ffmpeg_exe", lambda: str(fake))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(OutputError, match=r"exit code 3.*encoder exploded"):
        with Mp4Writer(out_dir / "out.mp4", W, H, audio=tone(0.2)) as writer:
            writer.write(np.zeros((200, H, W, 3), np.uint8))  # more than a pipe buffer
    assert leftovers(out_dir) == []


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    with pytest.raises(OutputError, match="already exists.*--overwrite"):
        with Mp4Writer(out, W, H) as writer:
            writer.write(np.zeros((1, H, W, 3), np.uint8))
    assert out.read_bytes() == b"precious"
    # A failed overwrite leaves the old file too.
    with pytest.raises(RuntimeError):
        with Mp4Writer(out, W, H, overwrite=True) as writer:
            writer.write(np.zeros((3, H, W, 3), np.uint8))
            raise RuntimeError("boom")
    assert out.read_bytes() == b"precious"
    with Mp4Writer(out, W, H, overwrite=True) as writer:
        writer.write(np.zeros((3, H, W, 3), np.uint8))
    assert probe_media(out).n_frames == 3
    assert leftovers(tmp_path) == ["out.mp4"]


def test_check_output_path_refuses_up_front(tmp_path):
    with pytest.raises(OutputError, match="does not exist; create it"):
        check_output_path(tmp_path / "missing" / "out.mp4")
    with pytest.raises(OutputError, match="is a directory"):
        check_output_path(tmp_path)
    assert check_output_path(tmp_path / "new.mp4") == tmp_path / "new.mp4"
    assert leftovers(tmp_path) == []  # the write probe is removed again


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_directory_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="cannot write in output directory"):
            check_output_path(locked / "out.mp4")
    finally:
        locked.chmod(0o755)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")
def test_directory_refusing_new_files_is_refused_even_for_root():
    # /proc accepts no new files from anyone, root included (os.access would say yes).
    with pytest.raises(OutputError, match="cannot write in output directory /proc"):
        check_output_path("/proc/out.mp4")


def test_writer_checks_before_starting_ffmpeg(tmp_path, monkeypatch):
    monkeypatch.setattr(writer_module, "ffmpeg_exe", lambda: pytest.fail("ffmpeg started"))
    with pytest.raises(OutputError):
        with Mp4Writer(tmp_path / "nope" / "out.mp4", W, H):
            pass


def test_no_frames_is_an_error(tmp_path):
    with pytest.raises(OutputError, match="no frames"):
        with Mp4Writer(tmp_path / "out.mp4", W, H):
            pass
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------
# Frame conversion


def test_float_frames_map_to_uint8_with_rounding_and_clamping():
    values = torch.tensor([-3.0, -1.0, 0.0, 0.5, 1.0, 2.0])
    frames = values.view(1, 6, 1, 1).expand(3, 6, 2, 2)  # [3, n, H, W]
    pixels = frames_to_uint8(frames)
    assert pixels.shape == (6, 2, 2, 3) and pixels.dtype == np.uint8
    assert pixels[:, 0, 0, 0].tolist() == [0, 0, 128, 191, 255, 255]


def test_layouts_agree():
    cthw = torch.rand(3, 5, 4, 6) * 2 - 1
    tchw = cthw.permute(1, 0, 2, 3)
    batched = cthw[None]
    assert np.array_equal(frames_to_uint8(cthw), frames_to_uint8(tchw))
    assert np.array_equal(frames_to_uint8(cthw), frames_to_uint8(batched))
    square = torch.rand(3, 3, 4, 6)  # ambiguous: read as cthw unless told
    assert np.array_equal(frames_to_uint8(square), frames_to_uint8(square, "cthw"))
    assert np.array_equal(
        frames_to_uint8(square, "tchw"), frames_to_uint8(square.permute(1, 0, 2, 3), "cthw")
    )


def test_channel_order_is_rgb():
    frames = torch.full((3, 1, 2, 2), -1.0)
    frames[0] = 1.0  # red channel first
    assert frames_to_uint8(frames)[0, 0, 0].tolist() == [255, 0, 0]


def test_bad_frames_are_refused(tmp_path):
    with pytest.raises(TypeError, match="uint8"):
        frames_to_uint8(np.zeros((1, H, W, 3), np.float32))
    with pytest.raises(ValueError, match="channel"):
        frames_to_uint8(torch.zeros(2, 4, H, W))
    with pytest.raises(ValueError, match="opened for 64x48"):
        with Mp4Writer(tmp_path / "out.mp4", W, H) as writer:
            writer.write(np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="even"):
        Mp4Writer(tmp_path / "odd.mp4", 63, 48)


def test_probe_refuses_missing_and_non_media(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        probe_media(tmp_path / "missing.mp4")
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(InputError, match="no audio or video stream"):
        probe_media(tmp_path / "text.mp4")


def test_names_ffmpeg_could_misread_work(tmp_path):
    out = tmp_path / "take:2.mp4"  # "take:" would otherwise be read as a protocol
    with Mp4Writer(out, W, H, audio=tone(0.5)) as writer:
        writer.write(np.zeros((3, H, W, 3), np.uint8))
    info = probe_media(out)
    assert info.n_frames == 3 and abs(info.audio_duration - 0.5) <= AUDIO_TOLERANCE_S


def test_probe_of_audio_only_file(tmp_path):
    sf.write(tmp_path / "a.wav", tone(0.75), AUDIO_SAMPLE_RATE)
    info = probe_media(tmp_path / "a.wav")
    assert info.width is None and info.n_frames is None and info.video_codec is None
    assert info.audio_codec == "pcm_s16le" and info.audio_duration == 0.75

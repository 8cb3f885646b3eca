"""Streaming MP4 writer: frames are piped to the bundled ffmpeg as they are produced.

The video is H.264 (libx264, yuv420p, BT.709 tagged) at 25 fps with `+faststart`, the audio AAC
of exactly the given waveform. The file appears at its path only once ffmpeg has finished
cleanly: it is written to a hidden temporary file in the same directory and renamed (atomic on
one filesystem). On any failure, Ctrl-C included, ffmpeg is killed and the temporaries removed,
so a path either holds a complete video or is untouched.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, TypeVar

import numpy as np
import soundfile as sf
import torch

from streamavatar_cli.config import AUDIO_SAMPLE_RATE, FPS
from streamavatar_cli.diagnostics import ffmpeg_exe
from streamavatar_cli.errors import OutputError
from streamavatar_cli.video.probe import ffmpeg_file_arg

log = logging.getLogger(__name__)

Layout = Literal["cthw", "tchw"]

STDERR_TAIL_LINES = 6
"""How many of ffmpeg's last stderr lines an `OutputError` quotes."""

FAILED_EXIT_WAIT_S = 10.0
"""After ffmpeg has failed (a write to it broke), how long it may take to exit before it is
killed: its message is already on its stderr, and waiting longer could hang the render."""


def temp_path_for(path: Path, suffix: str) -> Path:
    """Hidden sibling of `path` for work in progress: ".<name>.<random>.tmp<suffix>".

    Same directory so the final rename never crosses filesystems; the leading dot hides it and
    ".tmp" marks it as safe to delete if a crash (SIGKILL, power loss) ever leaves one behind.
    """
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{suffix}")


def check_output_path(path: str | Path, overwrite: bool = False) -> Path:
    """Refuse an output path that cannot be written, before any expensive work starts.

    Checks: not a directory, not existing unless `overwrite`, parent directory exists and a
    file can really be created in it (a probe file: `os.access` can say yes where a create
    fails, e.g. /proc, some network filesystems, security modules). Returns the path.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(
            f"output {path} is a directory; give a file name such as {path / 'out.mp4'}."
        )
    if path.exists() and not overwrite:
        raise OutputError(f"output {path} already exists; use --overwrite or choose another name.")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(
            f"output directory {parent} is a file, not a directory; choose another output path."
        )
    if not parent.is_dir():
        raise OutputError(f"output directory {parent} does not exist; create it first.")
    probe = temp_path_for(path, "")
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as e:
        raise OutputError(
            f"cannot write in output directory {parent} ({e.strerror}); choose a writable one."
        ) from e
    os.close(fd)
    os.unlink(probe)
    return path


AAC_ARGS = ["-c:a", "aac", "-b:a", "64k"]
"""The audio encoding of every output: AAC, 64 kbit/s is ample for 16 kHz mono speech."""


def h264_args(crf: int) -> list[str]:
    """The video encoding every output shares (MP4, MPEG-TS, HLS): H.264 yuv420p at `crf`.

    Converted with and tagged BT.709 so players do not guess BT.601 and shift the colours.
    """
    return [
        "-vf", "scale=out_color_matrix=bt709:out_range=tv",
        "-c:v", "libx264", "-crf", str(crf), "-pix_fmt", "yuv420p",
        "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
        "-color_range", "tv",
    ]  # fmt: skip


def frames_to_uint8(frames: np.ndarray | torch.Tensor, layout: Layout | None = None) -> np.ndarray:
    """Frames as a C-contiguous uint8 array [n, H, W, 3].

    Accepts uint8 numpy [n, H, W, 3] (or one frame [H, W, 3]) or a float torch tensor in
    [-1, 1] laid out [3, n, H, W] ("cthw", what the VAE decodes) or [n, 3, H, W] ("tchw"),
    optionally with a leading batch of 1. A [3, 3, H, W] tensor is ambiguous and read as
    "cthw" unless `layout` says otherwise. Floats map to round((x + 1) * 127.5), clamped.
    """
    if isinstance(frames, np.ndarray):
        if frames.dtype != np.uint8:
            raise TypeError(f"numpy frames must be uint8 [n, H, W, 3], got dtype {frames.dtype}")
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"numpy frames must be [n, H, W, 3], got shape {frames.shape}")
        return np.ascontiguousarray(frames)
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"frames must be a numpy array or a torch tensor, got {type(frames)}")
    if not frames.is_floating_point():
        raise TypeError(f"tensor frames must be float in [-1, 1], got dtype {frames.dtype}")
    if frames.ndim == 5 and frames.shape[0] == 1:
        frames = frames[0]
    if frames.ndim != 4:
        raise ValueError(
            f"tensor frames must be [3, n, H, W] or [n, 3, H, W], got {tuple(frames.shape)}"
        )
    if layout is None:
        layout = "cthw" if frames.shape[0] == 3 else "tchw"
    channel_dim = 0 if layout == "cthw" else 1
    if frames.shape[channel_dim] != 3:
        raise ValueError(
            f"tensor frames {tuple(frames.shape)} have no channel axis of 3 ({layout})"
        )
    # Quantise on the frames' own device: a uint8 copy to the host is 4x smaller than fp32.
    # `add` makes the one new tensor; the rest is in place on it (this runs once per chunk).
    pixels = frames.detach().float().add(1.0).mul_(127.5).round_().clamp_(0, 255)
    order = (1, 2, 3, 0) if layout == "cthw" else (0, 2, 3, 1)
    return pixels.to(torch.uint8).permute(*order).contiguous().cpu().numpy()


_Encoder = TypeVar("_Encoder", bound="FfmpegEncoder")


class FfmpegEncoder:
    """What the MP4 and live writers share: one ffmpeg child fed raw RGB frames on its stdin,
    its stderr kept in an anonymous file (a pipe nobody reads would fill and deadlock), use as
    a context manager (`close` on success, `abort` on any exception), and how the child is
    ended and its failure quoted. Subclasses define `open` (which starts `_proc`), `close`,
    `abort` and `_error` (the exception that says ffmpeg failed).
    """

    def __init__(self, width: int, height: int, crf: int) -> None:
        if width < 2 or height < 2 or width % 2 or height % 2:
            raise ValueError(f"frame size {width}x{height}: yuv420p needs even sides >= 2")
        if not 0 <= crf <= 51:
            raise ValueError(f"crf={crf} is outside x264's range 0..51")
        self.width, self.height, self.crf = width, height, crf
        self.frames_written = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    def __enter__(self: _Encoder) -> _Encoder:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _pixels(self, frames: np.ndarray | torch.Tensor, layout: Layout | None) -> np.ndarray:
        """`frames_to_uint8`, checked against the size the writer was opened for."""
        pixels = frames_to_uint8(frames, layout)
        if pixels.shape[1:] != (self.height, self.width, 3):
            raise ValueError(
                f"frames are {pixels.shape[2]}x{pixels.shape[1]}, the writer was opened for "
                f"{self.width}x{self.height}"
            )
        return pixels

    def _finish_process(self, *, kill: bool, timeout: float | None = None) -> int:
        """Close ffmpeg's stdin (end of stream) or kill it; wait (at most `timeout` s, then
        kill); return its exit code."""
        assert self._proc is not None
        if kill and self._proc.poll() is None:
            self._proc.kill()
        if self._proc.stdin is not None:
            try:
                self._proc.stdin.close()
            except OSError:
                pass  # already dead: its exit code and stderr tell the story
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("ffmpeg did not exit %.0f s after it failed; killed", timeout)
            self._proc.kill()
            return self._proc.wait()

    def _stderr_tail(self) -> str:
        """ffmpeg's last `STDERR_TAIL_LINES` non-empty stderr lines, joined by ' | '."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return " | ".join(lines[-STDERR_TAIL_LINES:])

    def _send(self, pixels: np.ndarray) -> int:
        """Pipe uint8 frames to ffmpeg; if it has died (its reader went away, a full disk),
        end it, clean up and raise `_error()` with what its stderr says."""
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(memoryview(pixels).cast("B"))
        except OSError as e:
            self._failed(e)
        self.frames_written += len(pixels)
        return len(pixels)

    def _failed(self, cause: OSError) -> None:
        self._finish_process(kill=False, timeout=FAILED_EXIT_WAIT_S)
        error = self._error()
        self.abort()
        raise error from cause

    def _failure_message(self, name: str | Path) -> str:
        code = self._proc.returncode if self._proc is not None else None
        tail = self._stderr_tail()
        return f"ffmpeg failed writing {name} (exit code {code}): {tail or 'no message'}"


class Mp4Writer(FfmpegEncoder):
    """Context manager that encodes frames to an MP4 while they are produced.

    >>> with Mp4Writer("out.mp4", 512, 512, audio=wave, total_frames=37) as w:
    ...     for chunk in chunks:
    ...         w.write(chunk)

    With `total_frames` the video has exactly that many frames: extra frames are dropped and
    too few at the end is an `OutputError`. `audio` (float mono at `audio_rate`) is muxed
    whole; no `-shortest`, so neither stream is cut (measured: the decoded AAC has exactly
    len(audio) samples, the mp4 edit list hides the encoder delay).
    """

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        *,
        fps: int = FPS,
        audio: np.ndarray | None = None,
        audio_rate: int = AUDIO_SAMPLE_RATE,
        total_frames: int | None = None,
        crf: int = 18,
        overwrite: bool = False,
    ) -> None:
        super().__init__(width, height, crf)
        if fps <= 0 or audio_rate <= 0:
            raise ValueError(f"fps={fps} and audio_rate={audio_rate} must be positive")
        if total_frames is not None and total_frames < 1:
            raise ValueError(f"total_frames={total_frames} must be >= 1")
        self.path = Path(path)
        self.fps = fps
        self.audio = None if audio is None else _check_audio(audio)
        self.audio_rate = audio_rate
        self.total_frames = total_frames
        self.overwrite = overwrite
        self._state: Literal["new", "open", "done", "failed"] = "new"
        self._tmp_video: Path | None = None
        self._tmp_audio: Path | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def open(self) -> None:
        """Check the output path, write the audio temp file and start ffmpeg."""
        if self._state != "new":
            raise RuntimeError(f"Mp4Writer can be opened once (it is {self._state})")
        check_output_path(self.path, self.overwrite)
        self._state = "open"
        try:
            self._tmp_video = temp_path_for(self.path, ".mp4")
            if self.audio is not None:
                self._tmp_audio = temp_path_for(self.path, ".wav")
                sf.write(self._tmp_audio, self.audio, self.audio_rate, subtype="FLOAT")
            self._stderr = tempfile.TemporaryFile()
            cmd = self._command()
            log.debug("ffmpeg: %s", " ".join(cmd))
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                bufsize=0,
                # Own session: the terminal's Ctrl-C reaches only us, and we clean up ffmpeg.
                start_new_session=os.name == "posix",
            )
        except BaseException:
            self.abort()
            raise

    def _command(self) -> list[str]:
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
        cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.width}x{self.height}"]
        cmd += ["-framerate", str(self.fps), "-i", "pipe:0"]
        if self._tmp_audio is not None:
            cmd += ["-i", ffmpeg_file_arg(self._tmp_audio), "-map", "0:v:0", "-map", "1:a:0"]
            cmd += AAC_ARGS
        cmd += h264_args(self.crf) + ["-movflags", "+faststart", "-f", "mp4"]
        assert self._tmp_video is not None
        return cmd + [ffmpeg_file_arg(self._tmp_video)]

    def write(self, frames: np.ndarray | torch.Tensor, layout: Layout | None = None) -> int:
        """Encode frames (see `frames_to_uint8` for the accepted forms); returns how many were
        kept, which is fewer than given once `total_frames` is reached."""
        if self._state != "open" or self._proc is None or self._proc.stdin is None:
            raise RuntimeError(f"Mp4Writer.write() on a writer that is {self._state}")
        pixels = self._pixels(frames, layout)
        if self.total_frames is not None:
            pixels = pixels[: self.total_frames - self.frames_written]
        if len(pixels) == 0:
            return 0
        return self._send(pixels)

    def close(self) -> None:
        """Finish encoding and move the video onto its path; on any failure clean up."""
        if self._state == "done":
            return
        if self._state == "failed":
            raise OutputError(f"{self.path} was not written: an earlier error stopped the video.")
        if self._state == "new":
            raise RuntimeError("Mp4Writer.close() before open()")
        try:
            if self.frames_written == 0:
                raise OutputError(f"no frames were produced; {self.path} was not written.")
            if self.total_frames is not None and self.frames_written < self.total_frames:
                raise OutputError(
                    f"only {self.frames_written} of {self.total_frames} frames were produced; "
                    f"{self.path} was not written."
                )
            if self._finish_process(kill=False) != 0:
                raise self._error()
            if self.path.exists() and not self.overwrite:
                raise OutputError(f"output {self.path} appeared while rendering; not replaced.")
            assert self._tmp_video is not None
            os.replace(self._tmp_video, self.path)
            self._tmp_video = None
            self._state = "done"
            log.info("wrote %s (%d frames)", self.path, self.frames_written)
        finally:
            self.abort()

    def abort(self) -> None:
        """Kill ffmpeg and delete every temporary file; `path` is left as it was. Idempotent."""
        if self._state == "open":
            self._state = "failed"
        if self._proc is not None:
            self._finish_process(kill=True)
        for tmp in (self._tmp_video, self._tmp_audio):
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        self._tmp_video = self._tmp_audio = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        self._proc = None

    def _error(self) -> OutputError:
        return OutputError(self._failure_message(self.path))


def _check_audio(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim == 2 and audio.shape[1] == 1:
        audio = audio[:, 0]
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError(f"audio must be a non-empty mono waveform [samples], got {audio.shape}")
    if not np.issubdtype(audio.dtype, np.floating):
        raise TypeError(f"audio must be float in [-1, 1], got dtype {audio.dtype}")
    if not np.isfinite(audio).all():
        raise ValueError("audio contains NaN or infinite samples")
    return audio.astype(np.float32, copy=False)

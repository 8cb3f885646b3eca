"""Live outputs: MPEG-TS to stdout or a growing file, HLS segments, and MP4 from live audio.

One ffmpeg encodes video and audio as they arrive: frames go to its stdin, audio (raw float
mono) through a second pipe it reads as `pipe:N`. Both are written per chunk, so the muxer
always has audio for the video it is given and the stream can be watched while it is made
(the MP4 writer, by contrast, hands ffmpeg the whole mix up front). The audio pipe is fed by
its own thread: whatever order ffmpeg reads its inputs in, neither write can block the other.

Encoding is the MP4's (H.264 yuv420p BT.709 at the same CRF, AAC 64k) plus `-tune
zerolatency` (no frame look-ahead, no B-frames: x264 otherwise holds ~2 s of frames before its
first packet) and a keyframe every 2 s, so a player can join and HLS can cut 2 s segments.
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from streamavatar_cli.config import AUDIO_SAMPLE_RATE, FPS
from streamavatar_cli.diagnostics import ffmpeg_exe
from streamavatar_cli.errors import OutputError
from streamavatar_cli.video.probe import ffmpeg_file_arg
from streamavatar_cli.video.writer import (
    AAC_ARGS,
    FfmpegEncoder,
    Layout,
    check_output_path,
    h264_args,
    temp_path_for,
)

log = logging.getLogger(__name__)

STDOUT = "-"
"""The output name that means "MPEG-TS on standard output"."""

EXIT_PIPE_CLOSED = 141
"""The reader of stdout went away (128 + SIGPIPE, as shells report a process killed by it)."""

HLS_SEGMENT_S = 2
"""Target HLS segment length; also the keyframe interval of every live output."""

HLS_PLAYLIST = "index.m3u8"

ERROR_POLL_S = 0.2
"""How often the audio thread, while it has nothing to send, looks for an ffmpeg error."""

Kind = Literal["stdout", "ts", "hls", "mp4"]


class OutputClosed(OutputError):
    """The program reading our video (a player, `head`) closed the pipe: stop, quietly."""

    exit_code = EXIT_PIPE_CLOSED


@dataclass(frozen=True)
class LiveTarget:
    """Where a live render goes: `kind` and the file, folder or None (stdout)."""

    kind: Kind
    path: Path | None = None

    @property
    def name(self) -> str:
        return "stdout" if self.path is None else str(self.path)


def live_target(output: str | Path | None, segments: str | Path | None = None) -> LiveTarget:
    """The target for `-o` / `--segments`: "-" is stdout, "*.ts" a growing MPEG-TS file,
    `segments` an HLS folder, anything else an MP4 (finished at the end, as always)."""
    if segments is not None:
        if output is not None:
            raise ValueError("give either --output or --segments, not both")
        return LiveTarget("hls", Path(segments))
    if output is None:
        raise ValueError("give --output FILE (or - for stdout) or --segments DIR")
    if str(output) == STDOUT:
        return LiveTarget("stdout")
    path = Path(output)
    return LiveTarget("ts" if path.suffix.lower() in (".ts", ".m2ts") else "mp4", path)


def check_live_target(target: LiveTarget, overwrite: bool = False) -> None:
    """Refuse a target that cannot be written, before any work starts (see `check_output_path`)."""
    if target.kind == "stdout":
        return
    assert target.path is not None
    if target.kind != "hls":
        check_output_path(target.path, overwrite)
        return
    folder = target.path
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--segments {folder} is a file; give a folder for the HLS segments.")
    if not folder.parent.is_dir():
        raise OutputError(f"--segments: folder {folder.parent} does not exist; create it first.")
    if (folder / HLS_PLAYLIST).exists() and not overwrite:
        raise OutputError(
            f"{folder / HLS_PLAYLIST} already exists; use --overwrite or another folder."
        )
    folder.mkdir(exist_ok=True)
    check_output_path(folder / HLS_PLAYLIST, overwrite=True)  # writable?


class _AudioPump(threading.Thread):
    """Writes queued audio to ffmpeg's audio pipe, so a full pipe never blocks the video.

    It also ends the audio when ffmpeg has reported an error (anything in `error_log`: ffmpeg
    runs at -loglevel error). ffmpeg exits only after its audio reader returns, and that
    reader waits for audio we send only between video writes; a video write blocked on an
    ffmpeg that stopped reading video (its output failed: the reader of stdout went away, a
    full disk) would wait for ever. With the audio ended ffmpeg exits, the video write fails,
    and `error` makes the next `write_audio` report it."""

    def __init__(self, fd: int, error_log: int) -> None:
        super().__init__(name="streamavatar-audio-out", daemon=True)
        self.fd, self.error_log = fd, error_log
        self.pending: queue.Queue[bytes | None] = queue.Queue()
        self.error: OSError | None = None

    def run(self) -> None:
        try:
            while (data := self._next()) is not None:
                view = memoryview(data)
                while view:
                    view = view[os.write(self.fd, view) :]
        except OSError as e:  # ffmpeg is gone; the video side reports why
            self.error = e
        finally:
            os.close(self.fd)
            os.close(self.error_log)

    def _next(self) -> bytes | None:
        """The next queued audio; None at the end, or once ffmpeg has reported an error."""
        while True:
            try:
                return self.pending.get(timeout=ERROR_POLL_S)
            except queue.Empty:
                if os.fstat(self.error_log).st_size > 0:
                    self.error = OSError("ffmpeg reported an error")
                    return None

    def end(self) -> None:
        """No more audio: the thread writes what is queued, closes the pipe and stops."""
        self.pending.put(None)

    def finish(self) -> None:
        self.end()
        self.join()


class LiveWriter(FfmpegEncoder):
    """Context manager encoding frames and audio as they arrive (see the module docstring).

    >>> with LiveWriter(live_target("-"), 256, 256) as w:
    ...     for frames, audio in chunks:
    ...         w.write_audio(audio)   # float mono at 16 kHz
    ...         w.write(frames)        # as `Mp4Writer.write`

    stdout and `.ts` are written in place (that is the point: they are watched while they
    grow), so an interrupted stream leaves what was sent, which is valid MPEG-TS; with no frame
    written the file is removed. HLS writes `index.m3u8` and `segNNNNN.ts` in the folder. MP4
    goes to a temporary file renamed at the end, like `Mp4Writer`.
    """

    def __init__(
        self,
        target: LiveTarget,
        width: int,
        height: int,
        *,
        crf: int = 18,
        overwrite: bool = False,
        fps: int = FPS,
        audio_rate: int = AUDIO_SAMPLE_RATE,
    ) -> None:
        super().__init__(width, height, crf)
        self.target = target
        self.fps, self.audio_rate, self.overwrite = fps, audio_rate, overwrite
        self.samples_written = 0
        self._pump: _AudioPump | None = None
        self._tmp: Path | None = None
        self._state: Literal["new", "open", "done", "failed"] = "new"

    def open(self) -> None:
        if self._state != "new":
            raise RuntimeError(f"LiveWriter can be opened once (it is {self._state})")
        check_live_target(self.target, self.overwrite)
        self._state = "open"
        read_fd, write_fd = os.pipe()
        try:
            self._stderr = tempfile.TemporaryFile()
            if self.target.kind == "mp4":
                assert self.target.path is not None
                self._tmp = temp_path_for(self.target.path, ".mp4")
            cmd = self._command(read_fd)
            log.debug("ffmpeg: %s", " ".join(cmd))
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                # stdout: ours (inherited) for "-", else nothing
                stdout=None if self.target.kind == "stdout" else subprocess.DEVNULL,
                stderr=self._stderr,
                pass_fds=(read_fd,),
                bufsize=0,
                start_new_session=os.name == "posix",  # our Ctrl-C is ours to clean up
            )
            self._pump = _AudioPump(write_fd, os.dup(self._stderr.fileno()))
            write_fd = -1
            self._pump.start()
        except BaseException:
            if write_fd >= 0:
                os.close(write_fd)
            self.abort()
            raise
        finally:
            os.close(read_fd)

    def _command(self, audio_fd: int) -> list[str]:
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
        cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.width}x{self.height}"]
        cmd += ["-framerate", str(self.fps), "-i", "pipe:0"]
        cmd += ["-f", "f32le", "-ar", str(self.audio_rate), "-ac", "1", "-i", f"pipe:{audio_fd}"]
        cmd += ["-map", "0:v:0", "-map", "1:a:0", *AAC_ARGS, *h264_args(self.crf)]
        cmd += ["-tune", "zerolatency", "-g", str(HLS_SEGMENT_S * self.fps)]
        kind, path = self.target.kind, self.target.path
        if kind == "stdout":
            return cmd + ["-flush_packets", "1", "-f", "mpegts", "pipe:1"]
        assert path is not None
        if kind == "ts":
            return cmd + ["-flush_packets", "1", "-f", "mpegts", ffmpeg_file_arg(path)]
        if kind == "hls":
            cmd += ["-f", "hls", "-hls_time", str(HLS_SEGMENT_S), "-hls_list_size", "0"]
            cmd += ["-hls_playlist_type", "event", "-hls_flags", "independent_segments"]
            cmd += ["-hls_segment_filename", str(path / "seg%05d.ts")]
            return cmd + [str(path / HLS_PLAYLIST)]
        assert self._tmp is not None
        return cmd + ["-movflags", "+faststart", "-f", "mp4", ffmpeg_file_arg(self._tmp)]

    def write_audio(self, samples: np.ndarray) -> None:
        """Queue float mono samples for the audio stream (the mix that plays with the video)."""
        self._check_open()
        assert self._pump is not None
        if self._pump.error is not None:
            self._failed(self._pump.error)
        data = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
        self._pump.pending.put(data.astype("<f4").tobytes())
        self.samples_written += len(data)

    def write(self, frames: np.ndarray | torch.Tensor, layout: Layout | None = None) -> int:
        """Encode frames (the forms `frames_to_uint8` accepts); returns how many."""
        self._check_open()
        assert self._proc is not None and self._proc.stdin is not None
        pixels = self._pixels(frames, layout)
        return self._send(pixels)

    def close(self) -> None:
        """End both streams, wait for ffmpeg, and (MP4) move the file onto its path."""
        if self._state == "done":
            return
        if self._state == "failed":
            raise OutputError(f"{self.target.name} was not finished: an earlier error stopped it.")
        self._check_open()
        assert self._proc is not None and self._pump is not None
        try:
            if self.frames_written == 0:
                raise OutputError(f"no frames were produced; {self.target.name} was not written.")
            # End both inputs before waiting for anything: joining the pump first could wait
            # for ffmpeg to read audio while ffmpeg waits for the end of the video.
            self._pump.end()
            if self._finish_process(kill=False) != 0:
                raise self._error()
            self._pump.join()  # its end was queued above
            if self._pump.error is not None:  # ffmpeg logged an error and got no more audio
                raise self._error()
            if self._tmp is not None:
                assert self.target.path is not None
                if self.target.path.exists() and not self.overwrite:
                    raise OutputError(f"output {self.target.path} appeared while rendering.")
                os.replace(self._tmp, self.target.path)
                self._tmp = None
            self._state = "done"
            log.info("wrote %s (%d frames)", self.target.name, self.frames_written)
        finally:
            self.abort()

    def abort(self) -> None:
        """Kill ffmpeg, stop the audio thread, remove temporaries. Idempotent.

        A live file that received frames is kept: it is a valid stream of what was sent."""
        if self._state == "open":
            self._state = "failed"
        if self._proc is not None:
            self._finish_process(kill=True)
        if self._pump is not None:
            self._pump.finish()  # its pipe's reader is gone: returns at once
            self._pump = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None
        if self._state == "failed" and self.frames_written == 0 and self.target.kind == "ts":
            assert self.target.path is not None
            self.target.path.unlink(missing_ok=True)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        self._proc = None

    def _check_open(self) -> None:
        if self._state != "open" or self._proc is None:
            raise RuntimeError(f"LiveWriter used while it is {self._state}")

    def _error(self) -> OutputError:
        if self.target.kind == "stdout" and "Broken pipe" in self._stderr_tail():
            seconds = self.frames_written / self.fps
            return OutputClosed(
                f"the reader of stdout closed the pipe; stopped after {seconds:.2f} s of video."
            )
        return OutputError(self._failure_message(self.target.name))

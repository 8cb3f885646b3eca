"""Audio that arrives while we work: stdin, a FIFO, or a file read as a stream.

The bytes go through the bundled ffmpeg (down-mix, resample to 16 kHz float) like every other
input, but the container is handled here first: a WAV header is parsed in Python and ffmpeg
gets raw PCM, because ffmpeg's WAV reader buffers 64 KB (2 s of 16 kHz s16) to look for S/PDIF
before its first sample. Raw PCM (`--audio-format s16le --audio-rate 16000`) needs no header;
any other format ffmpeg can stream (mp3, ogg, flac, ...) is probed by ffmpeg itself.

Two threads per stream keep the pipes moving: one copies the source into ffmpeg, one reads
ffmpeg's samples into a bounded queue (about a minute), so a producer that runs ahead of the
renderer is slowed down by the pipe, never by memory.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import stat
import struct
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from streamavatar_cli.config import AUDIO_SAMPLE_RATE
from streamavatar_cli.errors import InputError

log = logging.getLogger(__name__)

STDIN = "-"

RAW_FORMATS = {"u8": 1, "s16le": 2, "s16be": 2, "s24le": 3, "s32le": 4, "f32le": 4, "f64le": 8}
"""Headerless PCM sample formats (ffmpeg's names) and their bytes per sample."""

_WAV_PCM, _WAV_FLOAT, _WAV_EXTENSIBLE = 1, 3, 0xFFFE
_QUEUE_BLOCKS = 256
"""Decoded blocks held per stream (each at most 4096 samples): about 65 s of audio."""
_READ_BYTES = 16384


@dataclass(frozen=True)
class StreamFormat:
    """How to read a stream: `format` "auto" (WAV header, else ffmpeg probes), "wav", a raw
    PCM name from `RAW_FORMATS` (then `rate` and `channels` describe it), or any other ffmpeg
    input format name ("mp3", "ogg", ...)."""

    format: str = "auto"
    rate: int = AUDIO_SAMPLE_RATE
    channels: int = 1

    def validate(self) -> StreamFormat:
        if not self.format or not self.format.replace("_", "").isalnum():
            raise InputError(
                f"--audio-format {self.format!r}: give auto, wav, a raw PCM format "
                f"({', '.join(RAW_FORMATS)}) or an ffmpeg format name such as mp3"
            )
        if not 1000 <= self.rate <= 384000:
            raise InputError(f"--audio-rate {self.rate}: give a sample rate in Hz, 1000..384000")
        if not 1 <= self.channels <= 8:
            raise InputError(f"--audio-channels {self.channels}: give 1..8")
        return self

    @property
    def raw(self) -> bool:
        return self.format in RAW_FORMATS


def is_stream_path(path: str | Path | None) -> bool:
    """True for "-" (stdin) and for FIFOs: inputs that must be read as they arrive."""
    if path is None:
        return False
    if str(path) == STDIN:
        return True
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


def _read_exact(fd: int, n: int) -> bytes:
    """Up to n bytes, fewer only at end of stream (a pipe returns what it has)."""
    parts, got = [], 0
    while got < n:
        data = os.read(fd, n - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


@dataclass(frozen=True)
class _RawParams:
    format: str
    rate: int
    channels: int


def _wav_params(fd: int, name: str, head: bytes) -> tuple[_RawParams | None, bytes]:
    """Parse a RIFF/WAVE header up to its data chunk. Returns the PCM parameters (None: a
    codec ffmpeg must decode, such as ADPCM) and the bytes read that ffmpeg must still get."""
    consumed = bytearray(head)
    params = None
    while True:
        chunk = _read_exact(fd, 8)
        consumed += chunk
        if len(chunk) < 8:
            raise InputError(f"{name}: the WAV header ended before its data chunk")
        cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if cid == b"data":
            if params is None:
                raise InputError(f"{name}: WAV data before its 'fmt ' chunk")
            return (params, b"") if params.format else (None, bytes(consumed))
        body = _read_exact(fd, size + (size & 1)) if size < 1 << 20 else b""
        consumed += body
        if len(body) < size:
            raise InputError(f"{name}: the WAV header is truncated or corrupt")
        if cid == b"fmt ":
            params = _fmt_chunk(body, name)


def _fmt_chunk(body: bytes, name: str) -> _RawParams:
    if len(body) < 16:
        raise InputError(f"{name}: the WAV 'fmt ' chunk is too short")
    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
    if tag == _WAV_EXTENSIBLE and len(body) >= 26:
        tag = struct.unpack("<H", body[24:26])[0]
    if channels < 1 or rate < 1:
        raise InputError(f"{name}: the WAV header says {channels} channels at {rate} Hz")
    names = {(_WAV_PCM, 8): "u8", (_WAV_PCM, 16): "s16le", (_WAV_PCM, 24): "s24le",
             (_WAV_PCM, 32): "s32le", (_WAV_FLOAT, 32): "f32le", (_WAV_FLOAT, 64): "f64le"}  # fmt: skip
    return _RawParams(names.get((tag, bits), ""), rate, channels)


class AudioStream:
    """float32 mono 16 kHz blocks of a stream, as they arrive (not loudness-normalised).

    `open()` blocks until the first bytes arrive (or the stream ends) and raises `InputError`
    for a bad header or format; `read()` returns the next block, None at the end, and raises
    `InputError` if ffmpeg cannot decode the stream. `close()` kills ffmpeg.
    """

    def __init__(self, source: str | Path, fmt: StreamFormat, role: str = "audio") -> None:
        self.source = str(source)
        self.fmt = fmt.validate()
        self.name = f"{role} {'stdin' if self.source == STDIN else self.source}"
        self.samples_read = 0
        self._blocks: queue.Queue[np.ndarray | BaseException | None] = queue.Queue(_QUEUE_BLOCKS)
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._fd = -1
        self._ended = False
        self._first: np.ndarray | None = None
        self._closed = False

    def open(self) -> AudioStream:
        self._fd = self._open_source()
        try:
            first = b"" if self.fmt.raw else _read_exact(self._fd, 12)
            input_args, prefix = self._input_args(first)
            if self.fmt.raw:
                prefix = _read_exact(self._fd, 1)
            if not prefix and not first:
                raise InputError(f"{self.name}: the stream ended before any audio arrived")
            self._start_ffmpeg(input_args, prefix)
            # Wait for the first decoded samples: a stream ffmpeg cannot decode fails here,
            # while inputs are being checked, not after the render has started.
            first_block = self.read()
            assert first_block is not None  # read() raises on an empty stream
            self._first = first_block
        except BaseException:
            self.close()
            raise
        return self

    def _open_source(self) -> int:
        if self.source == STDIN:
            return os.dup(0)
        path = Path(self.source)
        if not path.exists():
            raise InputError(f"{self.name} does not exist: check the path.")
        if path.is_dir():
            raise InputError(f"{self.name} is a directory: give a FIFO, a file or -.")
        try:
            return os.open(path, os.O_RDONLY)  # a FIFO: waits for its writer
        except OSError as e:
            raise InputError(f"cannot read {self.name} ({e.strerror}); check it.") from e

    def _input_args(self, first: bytes) -> tuple[list[str], bytes]:
        """ffmpeg's input options, and the bytes already read that it must still receive."""
        fmt = self.fmt
        if fmt.raw:
            return self._raw_args(_RawParams(fmt.format, fmt.rate, fmt.channels)), b""
        is_wav = first[:4] == b"RIFF" and first[8:12] == b"WAVE"
        if fmt.format == "wav" and not is_wav:
            raise InputError(
                f"{self.name} is not a WAV stream (it starts with {first[:12]!r}); for raw "
                "PCM give --audio-format s16le --audio-rate 16000"
            )
        if is_wav:
            params, rest = _wav_params(self._fd, self.name, first)
            if params is not None:
                return self._raw_args(params), b""
            return ["-f", "wav"], rest
        if fmt.format == "auto":
            return [], first
        return ["-f", fmt.format], first

    @staticmethod
    def _raw_args(p: _RawParams) -> list[str]:
        return ["-f", p.format, "-ar", str(p.rate), "-ac", str(p.channels)]

    def _start_ffmpeg(self, input_args: list[str], prefix: bytes) -> None:
        from streamavatar_cli.diagnostics import ffmpeg_exe

        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error"]
        cmd += [*input_args, "-i", "pipe:0", "-map", "0:a:0", "-vn", "-ac", "1"]
        cmd += ["-ar", str(AUDIO_SAMPLE_RATE), "-f", "f32le", "-flush_packets", "1", "pipe:1"]
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            bufsize=0,
            start_new_session=os.name == "posix",  # the terminal's Ctrl-C is ours to handle
        )
        # The copying thread owns the source from here and closes it when it ends: closing an
        # fd another thread is reading could hand its number to an unrelated file.
        fd, self._fd = self._fd, -1
        threading.Thread(
            target=self._copy_in, args=(fd, prefix), name="streamavatar-audio-in", daemon=True
        ).start()
        threading.Thread(
            target=self._decode_out, args=(self._proc,), name="streamavatar-audio-dec", daemon=True
        ).start()

    def _copy_in(self, fd: int, prefix: bytes) -> None:
        """Source -> ffmpeg's stdin until the source ends (then ffmpeg sees end of input)."""
        assert self._proc is not None and self._proc.stdin is not None
        sink = self._proc.stdin
        try:
            if prefix:
                sink.write(prefix)
            while data := os.read(fd, _READ_BYTES):
                sink.write(data)
        except (OSError, ValueError):
            pass  # ffmpeg or our side is closing; the decoder thread reports failures
        finally:
            os.close(fd)
            try:
                sink.close()
            except OSError:
                pass

    def _decode_out(self, proc: subprocess.Popen[bytes]) -> None:
        """ffmpeg's stdout -> float blocks in the queue; then None, or the decode error.

        Holds its own reference to the process: `close()` may drop ours at any moment."""
        assert proc.stdout is not None
        out, rest = proc.stdout, b""
        try:
            while data := out.read(_READ_BYTES):
                data = rest + data
                usable = len(data) - len(data) % 4
                rest = data[usable:]
                if usable:
                    self._blocks.put(np.frombuffer(data[:usable], "<f4").astype(np.float32))
            code = proc.wait()
            if not self._closed:
                self._blocks.put(None if code == 0 else self._decode_error(code))
        except (OSError, ValueError, AssertionError) as e:  # closing under our feet
            if not self._closed:
                self._blocks.put(InputError(f"{self.name}: reading the decoded audio failed ({e})"))

    def _decode_error(self, code: int) -> InputError:
        assert self._stderr is not None
        self._stderr.seek(0)
        lines = [x.strip() for x in self._stderr.read().decode("utf-8", "replace").splitlines()]
        # ffmpeg prefixes lines with the component, "[in#0 @ 0x55d8...] ": not for users
        detail = next((re.sub(r"^\[[^]]*\] ", "", x) for x in lines if x), f"exit code {code}")
        return InputError(
            f"cannot decode {self.name} as audio ({detail}): give WAV, raw PCM "
            "(--audio-format s16le --audio-rate 16000) or a format ffmpeg can stream"
        )

    def read(self, timeout: float | None = None) -> np.ndarray | None:
        """The next decoded block; None once the stream has ended. With `timeout`, an empty
        array if nothing arrived in time."""
        if self._first is not None:
            block, self._first = self._first, None
            return block
        if self._ended:
            return None
        try:
            item = self._blocks.get(timeout=timeout)
        except queue.Empty:
            return np.zeros(0, np.float32)
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        if item is None:
            self._ended = True
            if self.samples_read == 0:
                raise InputError(f"{self.name}: the stream ended before any audio arrived")
            return None
        self.samples_read += len(item)
        return item

    def close(self) -> None:
        """Stop ffmpeg and release the source. Idempotent; safe from any state."""
        self._closed = True
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            for pipe in (self._proc.stdin, self._proc.stdout):
                if pipe is not None:
                    try:
                        pipe.close()
                    except OSError:
                        pass
            self._proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = -1

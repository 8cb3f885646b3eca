"""Live latency, measured from outside: audio fed at real time into `render -a - -o -`.

A feeder writes raw s16le audio into the render's stdin in 20 ms blocks on the wall clock and
notes when each block went in; a reader parses the MPEG-TS on its stdout and notes when the
first packet of each video frame arrives (frame index from the PES timestamp). A chunk's
latency is the time from its last audio sample going in to its first video bytes coming out:
look-ahead + generation + decode + encode + mux. The paper's anchor is 1.2 s. The first chunk
warms kernels up; it is reported as the first-frame delay, not in the latency figures.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamavatar_cli.bench.measure import Result
from streamavatar_cli.bench.render import _write_inputs
from streamavatar_cli.config import AUDIO_SAMPLE_RATE, FPS

BLOCK = AUDIO_SAMPLE_RATE // 50  # 20 ms
TS_PACKET = 188
PAPER_LATENCY_S = 1.2


@dataclass(frozen=True)
class Latency(Result):
    median_s: float
    p95_s: float
    first_frame_s: float
    lookahead_s: float
    chunks: int
    seconds: float
    size: int
    model: str
    compute_rtf: float  # (DiT + VAE time) / video time: above 1, latency grows chunk by chunk

    title = "live latency: median chunk latency / the paper's 1.2 s"
    target = 1.0

    def detail(self) -> str:
        return (
            f"median {self.median_s:.2f} s, p95 {self.p95_s:.2f} s over {self.chunks} chunks; "
            f"first frame {self.first_frame_s:.2f} s after the audio started; look-ahead "
            f"{self.lookahead_s:.2f} s, compute RTF {self.compute_rtf:.2f} ({self.seconds:.0f} s fed at real time through a pipe, "
            f"{self.model} at {self.size}x{self.size})"
        )


class _TsVideoClock:
    """Arrival time of the first TS packet of each video frame (by PES PTS)."""

    def __init__(self) -> None:
        self.pending = b""
        self.first_pts: int | None = None
        self.arrived: dict[int, float] = {}

    def feed(self, data: bytes, now: float) -> None:
        data = self.pending + data
        whole = len(data) - len(data) % TS_PACKET
        self.pending = data[whole:]
        for a in range(0, whole, TS_PACKET):
            self._packet(data[a : a + TS_PACKET], now)

    def _packet(self, p: bytes, now: float) -> None:
        if p[0] != 0x47 or not p[1] & 0x40:  # not a payload-unit start
            return
        start = 4 + (1 + p[4] if (p[3] >> 4) & 0x2 else 0)  # skip the adaptation field
        pes = p[start:]
        if len(pes) < 14 or pes[:3] != b"\x00\x00\x01" or not 0xE0 <= pes[3] <= 0xEF:
            return
        if not pes[7] & 0x80:  # no PTS
            return
        b = pes[9:14]
        pts = ((b[0] >> 1) & 7) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1
        if self.first_pts is None:
            self.first_pts = pts
        frame = round((pts - self.first_pts) * FPS / 90000)
        self.arrived.setdefault(frame, now)


def live_latency(
    seconds: float = 20.0, size: int = 64, model: str = "random-tiny", chunk_frames: int = 3
) -> Latency:
    """Feed `seconds` of speech-like audio at real time; measure per-chunk latency."""
    with tempfile.TemporaryDirectory() as tmp:
        image, wav = _write_inputs(Path(tmp), seconds, size)
        import soundfile

        audio = (soundfile.read(wav, dtype="float32")[0] * 32767).astype("<i2")
        cmd = [sys.executable, "-m", "streamavatar_cli", "render", "-i", str(image), "-a", "-",
               "--audio-format", "s16le", "-o", "-", "--model", model,
               "--resolution", f"{size}x{size}", "--json"]  # fmt: skip
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        clock = _TsVideoClock()
        reader = threading.Thread(target=_read, args=(proc.stdout, clock), daemon=True)
        reader.start()
        stderr: list[bytes] = []
        threading.Thread(target=lambda: stderr.append(proc.stderr.read()), daemon=True).start()
        # the first block lets the render finish checking its inputs (it waits for audio) and
        # load; real time starts once it has done so
        proc.stdin.write(audio[:BLOCK].tobytes())
        proc.stdin.flush()
        time.sleep(3.0)
        written = _feed(proc.stdin, audio[BLOCK:])
        proc.wait(timeout=600)
        reader.join(timeout=60)
    if proc.returncode != 0:
        tail = b"".join(stderr).decode(errors="replace").strip().splitlines()[-1:]
        raise RuntimeError(f"live render failed ({proc.returncode}): {tail}")
    return _summarise(clock, written, seconds, size, model, chunk_frames, b"".join(stderr))


def _read(out, clock: _TsVideoClock) -> None:
    while data := out.read1(65536):
        clock.feed(data, time.perf_counter())


def _feed(pipe, audio: np.ndarray) -> list[float]:
    """Write blocks on the wall clock; returns when each block (after the first) went in."""
    written, t0 = [], time.perf_counter()
    for i, a in enumerate(range(0, len(audio), BLOCK)):
        delay = t0 + i * BLOCK / AUDIO_SAMPLE_RATE - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        pipe.write(audio[a : a + BLOCK].tobytes())
        pipe.flush()
        written.append(time.perf_counter())
    pipe.close()
    return written


def _summarise(clock, written, seconds, size, model, chunk_frames, stderr: bytes) -> Latency:
    import json

    per_chunk = 4 * chunk_frames
    report = json.loads(stderr.decode().strip().splitlines()[-1])
    lookahead = float(report.get("latency", {}).get("lookahead", float("nan")))
    compute_rtf = report["rtf"]["dit"] + report["rtf"]["vae"]
    lat = []
    n_chunks = (round(seconds * FPS) - 1) // per_chunk
    for i in range(2, n_chunks + 1):
        first_frame = per_chunk * (i - 1) + 1
        last_sample = (per_chunk * i + 1) * (AUDIO_SAMPLE_RATE // FPS) - 1
        block = last_sample // BLOCK - 1  # `written` starts at block 1
        if first_frame in clock.arrived and 0 <= block < len(written):
            lat.append(clock.arrived[first_frame] - written[block])
    ordered = sorted(lat)
    median = statistics.median(ordered)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    first = clock.arrived.get(0, float("nan")) - written[0]
    return Latency(
        median / PAPER_LATENCY_S, median, p95, first, lookahead, len(lat), seconds, size, model,
        compute_rtf,
    )  # fmt: skip

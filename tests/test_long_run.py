"""A 10-minute render keeps flat memory (issue 8): nothing may grow with the video's length.

The render runs in a child process that reports, after every chunk, how much video is done and
its own peak and current RSS (VmHWM, VmRSS from /proc/self/status). Everything sized by the
whole track (the waveform, the per-frame audio features: a few MB for the tiny model's mel
features) is allocated before the first minute, so the peak at 10 minutes of video must stay
within 10 % of the peak at 1 minute. A memory assertion, not a timing one.
Run it with `make test-slow` (or `pytest -m slow -s tests/test_long_run.py` for the numbers).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from streamavatar_cli.config import AUDIO_SAMPLE_RATE as SR
from streamavatar_cli.video import probe_media

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MINUTES = (1, 5, 10)

CHILD = """
import sys, time
from pathlib import Path

from streamavatar_cli.pipeline.model import random_tiny_model
from streamavatar_cli.pipeline.render import RenderJob, render


def status_kb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])


t0 = time.perf_counter()


def report(p):
    hwm, rss = status_kb("VmHWM"), status_kb("VmRSS")
    print(f"progress {p.seconds_done:.3f} {hwm} {rss} {time.perf_counter() - t0:.1f}", flush=True)


audio, output = sys.argv[1], sys.argv[2]
job = RenderJob(image=Path(sys.argv[3]), agent_audio=Path(audio), output=Path(output),
                resolution=(64, 64))
result = render(random_tiny_model(), job, on_progress=report)
print(f"done {result.frames} {time.perf_counter() - t0:.1f} {result.rtf['total']:.3f}", flush=True)
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_ten_minute_render_has_flat_memory(tmp_path):
    wave, _ = sf.read(EXAMPLES / "agent.wav", dtype="float32")
    audio = tmp_path / "ten-minutes.wav"
    sf.write(audio, np.resize(wave, MINUTES[-1] * 60 * SR), SR)
    output = tmp_path / "long.mp4"
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(audio), str(output), str(EXAMPLES / "astronaut.png")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    at: dict[int, tuple[int, int, float]] = {}  # minute -> (peak kB, current kB, wall s)
    done = None
    for line in child.stdout:
        fields = line.split()
        if fields[0] == "progress":
            seconds, hwm, rss, wall = float(fields[1]), int(fields[2]), int(fields[3]), fields[4]
            for minute in MINUTES:
                if minute not in at and seconds >= minute * 60 - 1e-6:
                    at[minute] = (hwm, rss, float(wall))
        elif fields[0] == "done":
            done = fields
    stderr = child.stderr.read()
    assert child.wait() == 0, stderr
    assert done is not None and int(done[1]) == MINUTES[-1] * 60 * 25
    assert probe_media(output).n_frames == MINUTES[-1] * 60 * 25

    wall_s = time.perf_counter() - started
    print(f"\nlong run: {MINUTES[-1]} min of 64x64 video, wall {wall_s:.0f} s")
    for minute, (hwm, rss, wall) in sorted(at.items()):
        mib = f"peak RSS {hwm / 1024:.0f} MiB, RSS {rss / 1024:.0f} MiB"
        print(f"  {minute:2d} min of video: {mib}, {wall:.0f} s into the render")
    assert sorted(at) == list(MINUTES)
    assert at[10][0] <= 1.10 * at[1][0], f"peak RSS grew: {at}"
    assert at[10][1] <= 1.10 * at[1][1], f"RSS grew: {at}"  # the peak may date from loading

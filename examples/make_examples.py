"""Re-create the example speech tracks (agent.wav, user.wav) and their ground truth.

Run from the repository root:  .venv/bin/python examples/make_examples.py
Needs Debian's `espeak-ng` (apt-get install espeak-ng) and the ffmpeg binary that
imageio-ffmpeg ships. Writes 16 kHz mono 16-bit WAVs and `segments.json` with the exact
start/end (seconds) of every spoken segment as placed on the timeline, which the VAD tests
compare against.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import soundfile as sf

RATE = 16_000
DURATION_S = 7.5
HERE = Path(__file__).resolve().parent

# (track, start second, espeak-ng voice, text): the turns alternate agent -> user -> agent.
TURNS = [
    ("agent", 0.40, "en-us", "Hello! I am your streaming avatar."),
    ("user", 3.00, "en-us+f3", "Nice to meet you. Can you hear me?"),
    ("agent", 5.50, "en-us", "Yes, I can hear you well."),
]


def synthesize(voice: str, text: str) -> np.ndarray:
    """espeak-ng -> WAV (22.05 kHz) -> ffmpeg resample to 16 kHz mono float32."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        out = Path(tmp) / "out.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "165", "-w", str(raw), text], check=True)
        subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(raw),
             "-ac", "1", "-ar", str(RATE), "-c:a", "pcm_f32le", str(out)],
            check=True,
        )  # fmt: skip
        audio, rate = sf.read(out, dtype="float32")
    assert rate == RATE
    # Trim espeak's leading/trailing near-silence so the recorded truth is where speech is.
    loud = np.flatnonzero(np.abs(audio) > 0.02 * np.abs(audio).max())
    return audio[loud[0] : loud[-1] + 1]


def main() -> None:
    n = int(DURATION_S * RATE)
    tracks = {"agent": np.zeros(n, np.float32), "user": np.zeros(n, np.float32)}
    truth: dict[str, list[list[float]]] = {"agent": [], "user": []}
    for track, start, voice, text in TURNS:
        speech = synthesize(voice, text)
        i = int(round(start * RATE))
        assert i + len(speech) <= n, f"{text!r} does not fit before {DURATION_S} s"
        tracks[track][i : i + len(speech)] = speech * (0.5 / np.abs(speech).max())
        truth[track].append([round(i / RATE, 3), round((i + len(speech)) / RATE, 3)])
    for track, audio in tracks.items():
        sf.write(HERE / f"{track}.wav", audio, RATE, subtype="PCM_16")
    meta = {"sample_rate": RATE, "duration_s": DURATION_S, "segments": truth}
    (HERE / "segments.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta))


if __name__ == "__main__":
    main()

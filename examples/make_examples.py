"""Re-create the example speech tracks (agent.wav, user.wav; conversation-agent.wav,
conversation-user.wav), their ground truth, and the demo puppet (puppet.png).

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
HERE = Path(__file__).resolve().parent

# (track, start second, espeak-ng voice, text) per timeline. "agent"/"user": the short exchange
# the audio tests measure (7.5 s). "conversation": the 16 s turn-taking demo `make demo` renders.
TIMELINES = {
    "": (7.5, [
        ("agent", 0.40, "en-us", "Hello! I am your streaming avatar."),
        ("user", 3.00, "en-us+f3", "Nice to meet you. Can you hear me?"),
        ("agent", 5.50, "en-us", "Yes, I can hear you well."),
    ]),
    "conversation-": (16.0, [
        ("agent", 0.30, "en-us", "Hi there! I am a little puppet. I can talk, and I can listen."),
        ("user", 4.70, "en-us+f3", "Oh, nice. What do you do while I am speaking?"),
        ("agent", 8.00, "en-us", "I keep my mouth closed, I nod, and I look at you."),
        ("user", 11.40, "en-us+f3", "That sounds friendly. Show me how you listen."),
        ("agent", 14.50, "en-us", "Okay. Like this."),
    ]),
}  # fmt: skip
PUPPET_SEED = 100_003  # an evaluation seed: never seen in training (docs/design.md)
PUPPET_SIZE = (128, 128)


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


def make_timeline(prefix: str, duration_s: float, turns: list) -> dict:
    n = int(duration_s * RATE)
    tracks = {"agent": np.zeros(n, np.float32), "user": np.zeros(n, np.float32)}
    truth: dict[str, list[list[float]]] = {"agent": [], "user": []}
    for track, start, voice, text in turns:
        speech = synthesize(voice, text)
        i = int(round(start * RATE))
        assert i + len(speech) <= n, f"{text!r} does not fit before {duration_s} s"
        tracks[track][i : i + len(speech)] = speech * (0.5 / np.abs(speech).max())
        truth[track].append([round(i / RATE, 3), round((i + len(speech)) / RATE, 3)])
    for track, audio in tracks.items():
        sf.write(HERE / f"{prefix}{track}.wav", audio, RATE, subtype="PCM_16")
    return {"sample_rate": RATE, "duration_s": duration_s, "segments": truth}


def make_puppet() -> None:
    """The demo's reference image: the neutral frame of an evaluation-seed puppet."""
    from PIL import Image

    from streamavatar_cli.puppet import identity_from_seed, render_reference

    image = render_reference(identity_from_seed(PUPPET_SEED), PUPPET_SIZE)
    Image.fromarray(image).save(HERE / "puppet.png")


def main() -> None:
    metas = {}
    for prefix, (duration_s, turns) in TIMELINES.items():
        metas[prefix] = meta = make_timeline(prefix, duration_s, turns)
        (HERE / f"{prefix}segments.json").write_text(json.dumps(meta, indent=2) + "\n")
        print(json.dumps(meta))
    # the demo conversation's talk/listen truth, in the format `render --mask` reads
    talk = [[a, b, "talk"] for a, b in metas["conversation-"]["segments"]["agent"]]
    (HERE / "conversation-mask.json").write_text(json.dumps(talk) + "\n")
    make_puppet()


if __name__ == "__main__":
    main()

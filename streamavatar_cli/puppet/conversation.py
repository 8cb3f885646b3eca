"""Seeded two-speaker conversations with their ground-truth talk/listen mask.

Turns alternate (sometimes the same speaker goes on), separated by pauses or overlapping by
0.15-0.5 s; the listener sometimes says "mm-hm" during a long turn. Ground truth
(`turn_mask`): 1 from the first to the last sound of each agent turn; where an agent turn
overlaps a user turn the overlap region goes whole to the louder track, ties to the agent
(the `docs/design.md` overlap rule); the agent's backchannels are listening (they are
closed-mouth "mm-hm"s). With espeak-ng on PATH, `ESPEAK_FRACTION` of the clips speak real
English sentences instead of synthetic syllables.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamavatar_cli.audio.frames import frame_rms, mask_runs, num_video_frames
from streamavatar_cli.audio.mask import Segment, mask_to_segments, segments_to_mask
from streamavatar_cli.config import AUDIO_SAMPLE_RATE
from streamavatar_cli.puppet.speech import Voice, backchannel, random_voice, speak_turn

SR = AUDIO_SAMPLE_RATE
ESPEAK_FRACTION = 0.4
ESPEAK_VOICES = (
    "en-us",
    "en-gb",
    "en-us+f2",
    "en-gb+f4",
    "en+m3",
    "en-us+f5",
    "en-gb-scotland",
    "en+m7",
)
_WORDS = (
    "the weather looks fine today and i think we should go outside for a walk later "
    "did you see the new results they came in this morning it was quite a surprise "
    "maybe we can talk about the plan after lunch i really like that idea "
    "what do you mean by that could you explain it again please sure no problem "
    "honestly i have never heard about it before tell me more about the project"
).split()


@dataclass
class Conversation:
    """agent, user: float32 mono 16 kHz of the same length; mask: int8 per 25 fps frame."""

    agent: np.ndarray
    user: np.ndarray
    mask: np.ndarray
    segments: list[Segment] = field(default_factory=list)
    espeak: bool = False


@dataclass
class _Turn:
    speaker: int  # 0 agent, 1 user
    start: int  # samples
    audio: np.ndarray


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def _espeak(
    rng: np.random.Generator, voice_name: str, speed: int, pitch: int, seconds: float
) -> np.ndarray:
    """One English sentence from espeak-ng, resampled to 16 kHz and trimmed of silence."""
    import soundfile

    text = " ".join(rng.choice(_WORDS, size=max(3, int(seconds * 2.6))))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.wav"
        cmd = [
            "espeak-ng",
            "-v",
            voice_name,
            "-s",
            str(speed),
            "-p",
            str(pitch),
            "-w",
            str(path),
            text,
        ]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        wave, rate = soundfile.read(path, dtype="float64")
    if wave.ndim > 1:
        wave = wave.mean(axis=1)
    t_out = np.arange(int(len(wave) * SR / rate)) / SR
    wave = np.interp(t_out, np.arange(len(wave)) / rate, wave)
    loud = np.nonzero(np.abs(wave) > 0.01 * (np.abs(wave).max() + 1e-9))[0]
    return wave[loud[0] : loud[-1] + 1] if len(loud) else wave


def _plan(
    rng: np.random.Generator, seconds: float, voices: list[Voice], espeak_voices: list[tuple] | None
) -> tuple[list[_Turn], list[_Turn]]:
    """Turns and backchannels until the clip is full."""
    total = int(round(seconds * SR))
    turns: list[_Turn] = []
    extras: list[_Turn] = []
    t = int(rng.uniform(0.1, 0.8) * SR)
    speaker = int(rng.integers(2))
    while t < total - int(0.3 * SR):
        dur = float(rng.uniform(1.2, 4.5))
        if espeak_voices is not None:
            name, speed, pitch = espeak_voices[speaker]
            audio = _espeak(rng, name, speed, pitch, dur) * 0.6
        else:
            audio = speak_turn(rng, voices[speaker], dur)
        turns.append(_Turn(speaker, t, audio))
        if len(audio) > 2.0 * SR and rng.random() < 0.5:
            at = t + int(rng.uniform(0.8, len(audio) / SR - 0.6) * SR)
            extras.append(_Turn(1 - speaker, at, backchannel(rng, voices[1 - speaker])))
        end = t + len(audio)
        r = rng.random()
        if r < 0.2:
            t = end - int(rng.uniform(0.15, 0.5) * SR)  # overlap: the next one starts early
        else:
            t = end + int(rng.uniform(0.15, 0.9) * SR)
        speaker = speaker if r > 0.88 else 1 - speaker
    return turns, extras


def _tracks(turns: list[_Turn], total: int) -> tuple[np.ndarray, np.ndarray]:
    tracks = [np.zeros(total), np.zeros(total)]
    for turn in turns:
        stop = min(total, turn.start + len(turn.audio))
        if stop > turn.start:
            tracks[turn.speaker][turn.start : stop] += turn.audio[: stop - turn.start]
    return tracks[0], tracks[1]


def turn_mask(turns: list[_Turn], agent: np.ndarray, user: np.ndarray, n_frames: int) -> np.ndarray:
    """Ground truth: agent turns are talk; overlaps go whole to the louder track."""

    def frames_of(speaker: int) -> np.ndarray:
        segs = [
            (t.start / SR, (t.start + len(t.audio)) / SR, "talk")
            for t in turns
            if t.speaker == speaker
        ]
        return segments_to_mask(segs, n_frames).astype(bool)

    agent_on, user_on = frames_of(0), frames_of(1)
    mask = agent_on.copy()
    rms_a, rms_u = frame_rms(agent, n_frames), frame_rms(user, n_frames)
    for a, b, both in mask_runs(agent_on & user_on):
        if both and rms_u[a:b].mean() > rms_a[a:b].mean():
            mask[a:b] = False
    return mask.astype(np.int8)


def _finish(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Peak 0.8 shared by both tracks (their levels stay comparable) plus a -70 dB floor."""
    return (0.8 * wave + 3e-4 * rng.standard_normal(len(wave))).astype(np.float32)


def synth_conversation(seed: int, seconds: float, *, espeak: bool | None = None) -> Conversation:
    """A conversation of exactly `seconds` (seconds * 16000 samples, round(seconds * 25) frames).

    espeak=None: real sentences in ESPEAK_FRACTION of the seeds when espeak-ng is installed;
    True: always (error if missing); False: synthetic only.
    """
    if not seconds > 0:
        raise ValueError(f"seconds={seconds} must be > 0")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 5])
    use_espeak = rng.random() < ESPEAK_FRACTION
    if espeak is None:
        use_espeak = use_espeak and espeak_available()
    elif espeak and not espeak_available():
        raise ValueError("espeak=True but espeak-ng is not on PATH; install it or pass espeak=None")
    else:
        use_espeak = bool(espeak)
    voices = [random_voice(rng), random_voice(rng)]
    espeak_voices = None
    if use_espeak:
        names = rng.choice(ESPEAK_VOICES, size=2, replace=False)
        espeak_voices = [
            (str(v), int(rng.integers(140, 190)), int(rng.integers(25, 75))) for v in names
        ]
    total = int(round(seconds * SR))
    turns, extras = _plan(rng, seconds, voices, espeak_voices)
    agent, user = _tracks(turns + extras, total)
    n_frames = num_video_frames(total)
    mask = turn_mask(turns, agent, user, n_frames)
    scale = max(np.abs(agent).max(), np.abs(user).max(), 1e-9)
    agent, user = _finish(agent / scale, rng), _finish(user / scale, rng)
    return Conversation(agent, user, mask, mask_to_segments(mask), use_espeak)

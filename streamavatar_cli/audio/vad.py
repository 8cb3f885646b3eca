"""The speak/listen mask from audio: who is talking in each 25 fps video frame.

m[j] = 1 means the avatar talks in video frame j (ARCHITECTURE section 7). Voice activity
comes from Silero VAD (the `silero-vad` package ships its model; it is loaded once per
process). The raw per-frame decisions are then smoothed so the avatar does not flicker
between talking and listening on every pause between words.
"""

from __future__ import annotations

import threading
import warnings
from functools import lru_cache
from typing import Any

import numpy as np

from streamavatar_cli.audio.frames import (
    SAMPLES_PER_FRAME,
    frame_rms,
    mask_runs,
    num_video_frames,
)
from streamavatar_cli.config import AUDIO_SAMPLE_RATE, FPS

SAME_SPEAKER_GAP_S = 0.5
"""Pauses shorter than this inside one speaker's speech are still speech (espeak pauses ~0.3 s
after "Hello!"; people pause 0.2-0.5 s between phrases): one sentence stays one segment."""

MIN_TALK_S = 0.2
"""Talk segments shorter than this (a cough, a click) become listen: no 1-4 frame mouth flicks."""

MIN_SWITCH_GAP_S = 0.2
"""After the overlap rule, listen gaps shorter than this between talk segments are filled."""

EDGE_SILENCE_DBFS = -50.0
"""VAD segment edges quieter than this are trimmed: Silero's decision lags the real speech end
by ~0.1 s, the frame energy does not (27 dB under the -23 dBFS normalised speech level)."""

_VAD_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _silero_model() -> Any:
    """The Silero VAD model, loaded once per process (it ships inside the package)."""
    from silero_vad import load_silero_vad

    with warnings.catch_warnings():  # silero's importlib/torch.jit deprecations: not ours
        warnings.simplefilter("ignore", DeprecationWarning)
        return load_silero_vad()


def _speech_spans(wave: np.ndarray) -> list[tuple[int, int]]:
    """Silero speech segments as (start, end) sample indices."""
    import torch
    from silero_vad import get_speech_timestamps

    model = _silero_model()
    # The model is stateful (reset per call); one caller at a time.
    with _VAD_LOCK:
        stamps = get_speech_timestamps(
            torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)),
            model,
            sampling_rate=AUDIO_SAMPLE_RATE,
        )
    return [(int(s["start"]), int(s["end"])) for s in stamps]


def _trim_quiet_edges(frames: np.ndarray, rms: np.ndarray, start: int, end: int) -> None:
    """Switch off the near-silent frames at both ends of frames[start:end] (in place)."""
    loud = np.nonzero(rms[start:end] >= 10.0 ** (EDGE_SILENCE_DBFS / 20.0))[0]
    frames[start:end] = 0
    if loud.size:
        frames[start + loud[0] : start + loud[-1] + 1] = 1


def voice_activity(wave: np.ndarray, n_frames: int) -> np.ndarray:
    """Raw per-frame voice activity (bool) of one track, before smoothing.

    A frame is active when its centre time lies inside a Silero speech segment; segment
    edges are then trimmed to frames louder than -50 dBFS.
    """
    active = np.zeros(n_frames, dtype=bool)
    if n_frames == 0 or len(wave) == 0:
        return active
    rms = frame_rms(wave, n_frames)
    for start, end in _speech_spans(wave):
        # frame j is inside when start <= (j + 0.5) * 640 < end
        first = max(0, int(np.ceil(start / SAMPLES_PER_FRAME - 0.5)))
        stop = min(n_frames, int(np.ceil(end / SAMPLES_PER_FRAME - 0.5)))
        if stop > first:
            _trim_quiet_edges(active, rms, first, stop)
    return active


def smooth_mask(mask: np.ndarray, fill_gap_s: float, min_talk_s: float) -> np.ndarray:
    """Fill short off-gaps between on-segments, then drop on-segments that are still short.

    Gaps are filled first so that a sentence made of short words survives the second step.
    Only gaps with speech on both sides are filled: leading/trailing silence stays silence.
    """
    out = np.asarray(mask, dtype=bool).copy()
    fill_gap = round(fill_gap_s * FPS)
    min_talk = round(min_talk_s * FPS)
    runs = mask_runs(out)
    for i, (a, b, on) in enumerate(runs):
        if not on and 0 < i < len(runs) - 1 and b - a < fill_gap:
            out[a:b] = True
    for a, b, on in mask_runs(out):
        if on and b - a < min_talk:
            out[a:b] = False
    return out


def speaker_activity(wave: np.ndarray, n_frames: int) -> np.ndarray:
    """Smoothed voice activity of one speaker: pauses inside a sentence stay speech."""
    return smooth_mask(voice_activity(wave, n_frames), SAME_SPEAKER_GAP_S, MIN_TALK_S)


def resolve_overlaps(
    agent_active: np.ndarray, user_active: np.ndarray, agent_rms: np.ndarray, user_rms: np.ndarray
) -> np.ndarray:
    """Talk mask from both speakers' activity: the louder speaker wins each overlap.

    Agent only -> talk; user only or nobody -> listen. Where both speak, each contiguous
    overlap region as a whole goes to the track with the larger mean frame RMS there (ties go
    to the agent). Deciding per region, not per frame, avoids flicker during crosstalk.
    """
    talk = agent_active.copy()
    both = agent_active & user_active
    for a, b, on in mask_runs(both):
        if on and user_rms[a:b].mean() > agent_rms[a:b].mean():
            talk[a:b] = False
    return talk


def compute_speak_mask(
    agent: np.ndarray,
    user: np.ndarray | None = None,
    *,
    listen_when_silent: bool = False,
    n_frames: int | None = None,
) -> np.ndarray:
    """The speak/listen mask (int8 per video frame, 1 = avatar talks).

    Two tracks: agent voice activity, overlaps resolved by loudness (`resolve_overlaps`),
    then short talk segments and short listen gaps removed. One track: all talk, or, with
    `listen_when_silent`, talk exactly where the track has (smoothed) speech. `n_frames`
    defaults to the longer track's length (the length of the mix and of the video). The
    tracks are expected as `load_audio` returns them (loudness-normalised): the edge trim
    and the loudness comparison assume both are at the same level.
    """
    longest = max(len(agent), len(user) if user is not None else 0)
    n = num_video_frames(longest) if n_frames is None else int(n_frames)
    if user is None:
        if not listen_when_silent:
            return np.ones(n, dtype=np.int8)
        return speaker_activity(agent, n).astype(np.int8)
    talk = resolve_overlaps(
        speaker_activity(agent, n),
        speaker_activity(user, n),
        frame_rms(agent, n),
        frame_rms(user, n),
    )
    return smooth_mask(talk, MIN_SWITCH_GAP_S, MIN_TALK_S).astype(np.int8)

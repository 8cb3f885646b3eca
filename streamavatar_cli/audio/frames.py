"""The 25 fps video-frame grid every audio quantity is measured on (ARCHITECTURE section 3).

Video frame j is on screen during [j, j + 1) / 25 s, i.e. audio samples [640 j, 640 (j + 1)).
Per-frame features, RMS and the talk/listen mask all use this grid, so they line up exactly.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from streamavatar_cli.config import AUDIO_SAMPLE_RATE, FPS

SAMPLES_PER_FRAME = AUDIO_SAMPLE_RATE // FPS
"""640 audio samples per video frame."""


def num_video_frames(num_samples: int) -> int:
    """Video frames for `num_samples` of 16 kHz audio: round(T * 25), halves rounded up.

    Integer arithmetic, so the length is exact and identical everywhere it is computed.
    """
    return (int(num_samples) * FPS + AUDIO_SAMPLE_RATE // 2) // AUDIO_SAMPLE_RATE


def frame_rms(wave: np.ndarray, n_frames: int) -> np.ndarray:
    """RMS of each video frame's 640 samples (zero beyond the end of `wave`)."""
    padded = np.zeros(n_frames * SAMPLES_PER_FRAME, dtype=np.float64)
    usable = min(len(wave), len(padded))
    padded[:usable] = wave[:usable]
    return np.sqrt((padded.reshape(n_frames, SAMPLES_PER_FRAME) ** 2).mean(axis=1))


def mask_runs(mask: np.ndarray) -> list[tuple[int, int, bool]]:
    """Maximal runs of equal values as (start, stop, value), stop exclusive."""
    mask = np.asarray(mask).astype(bool)
    if mask.size == 0:
        return []
    change = np.nonzero(np.diff(mask.astype(np.int8)))[0] + 1
    bounds = [0, *change.tolist(), len(mask)]
    return [(a, b, bool(mask[a])) for a, b in pairwise(bounds)]

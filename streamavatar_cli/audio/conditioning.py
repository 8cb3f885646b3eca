"""Talk and listen audio conditioning, and its per-latent-frame windows (ARCHITECTURE 5, 7).

Paper rule: features are extracted from the MIXED waveform (agent + user) and the mask is
applied after extraction, talk = f * m, listen = f * (1 - m), m broadcast over layers and
width. Masking after extraction keeps wav2vec2's context intact across talk/listen switches.
Option `features="separate"`: talk from the agent track's features, listen from the user
track's, masked the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from streamavatar_cli.audio.features import FeatureExtractor
from streamavatar_cli.audio.load import mix_tracks
from streamavatar_cli.config import DEFAULT_AUDIO_WINDOW, VAE_TEMPORAL_STRIDE, AudioWindow

FeatureMode = Literal["mixed", "separate"]
FEATURE_MODES: tuple[str, ...] = ("mixed", "separate")


@dataclass(frozen=True)
class AudioConditioning:
    """Per-video-frame talk and listen features [n_frames, layers, dim] and the mask used."""

    talk: torch.Tensor
    listen: torch.Tensor
    mask: np.ndarray

    @property
    def n_frames(self) -> int:
        return int(self.talk.shape[0])


def _pad_to(wave: np.ndarray, length: int) -> np.ndarray:
    out = np.zeros(length, dtype=np.float32)
    out[: len(wave)] = wave
    return out


def build_audio_conditioning(
    extractor: FeatureExtractor,
    mask: np.ndarray,
    agent: np.ndarray,
    user: np.ndarray | None = None,
    *,
    features: FeatureMode = "mixed",
) -> AudioConditioning:
    """Talk/listen features for one job.

    `mask` (1 = talk) must have one entry per video frame of the mix (the longer track).
    "separate" needs a user track: without one there is nothing to listen to.
    """
    if features not in FEATURE_MODES:
        raise ValueError(f"features={features!r}; allowed: {list(FEATURE_MODES)}")
    if features == "mixed":
        talk_feats = listen_feats = extractor(mix_tracks(agent, user))
    else:
        if user is None:
            raise ValueError(
                "features='separate' needs a user track; give one or use features='mixed'"
            )
        length = max(len(agent), len(user))
        talk_feats = extractor(_pad_to(agent, length))
        listen_feats = extractor(_pad_to(user, length))
    if len(mask) != talk_feats.shape[0]:
        raise ValueError(
            f"mask has {len(mask)} frames but the audio has {talk_feats.shape[0]} video frames"
        )
    m = torch.as_tensor(np.asarray(mask), dtype=talk_feats.dtype)[:, None, None]
    return AudioConditioning(
        talk=talk_feats * m, listen=listen_feats * (1 - m), mask=np.asarray(mask, dtype=np.int8)
    )


def num_latent_frames(n_frames: int) -> int:
    """Audio-carrying latent frames for `n_frames` video frames: ceil((n_frames - 1) / 4).

    Video frame 0 is the reference (latent 0); latent k >= 1 decodes to frames 4k-3 .. 4k,
    so the last latent may run past the audio (the output is trimmed to n_frames).
    """
    return max(0, math.ceil((n_frames - 1) / VAE_TEMPORAL_STRIDE))


def latent_windows(
    frame_feats: torch.Tensor,
    n_latent: int,
    window: AudioWindow = DEFAULT_AUDIO_WINDOW,
    *,
    first: int = 1,
) -> torch.Tensor:
    """Per-latent audio windows [n_latent, window.size, L, D] from per-frame features
    [n_frames, L, D].

    Row i belongs to latent frame k = first + i (k = 1 .. by default; the streaming render asks
    for one chunk at a time); the reference latent k = 0 gets no audio. Latent k covers video
    frames 4k-3 .. 4k; its window is those 4 frames plus `window.past` before and
    `window.lookahead` after, each index clamped to [0, n_frames - 1] (edge frames repeat).
    The default window (8: 2 before, 2 after) of k = 1 is frames 0, 0, 1, 2, 3, 4, 5, 6
    (index -1 clamps to 0).
    """
    window.validate()
    n_frames = frame_feats.shape[0]
    if n_frames == 0 and n_latent > 0:
        raise ValueError("no audio frames to build latent windows from")
    if first < 1:
        raise ValueError(f"first={first}: latent 0 is the reference and has no audio window")
    return frame_feats[window_frames(window, first, n_latent).clamp(0, max(0, n_frames - 1))]


def window_frames(window: AudioWindow, first: int, n_latent: int) -> torch.Tensor:
    """Video frame indices [n_latent, window.size] of latents first .. first + n_latent - 1,
    before clamping to the audio's frames."""
    starts = torch.tensor([window.first_frame(k) for k in range(first, first + n_latent)],
                          dtype=torch.long)  # fmt: skip
    return starts[:, None] + torch.arange(window.size)[None]

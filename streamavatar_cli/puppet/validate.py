"""How well the pixel estimators of `metrics` recover the ground truth (R^2 over seeds).

R^2 = 1 - SS_res / SS_tot of the estimate against the truth in the same units, pooled over
all frames of all seeds, with no fitted scale or offset: an estimator in the wrong units
scores low.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamavatar_cli.puppet.metrics import FrameEstimates, score_video
from streamavatar_cli.puppet.render import Size, hand_offsets_truth, head_offset_truth
from streamavatar_cli.puppet.sample import sample_clip


def r_squared(estimate: np.ndarray, truth: np.ndarray) -> float:
    estimate, truth = (
        np.asarray(estimate, np.float64).ravel(),
        np.asarray(truth, np.float64).ravel(),
    )
    total = ((truth - truth.mean()) ** 2).sum()
    return float(1 - ((estimate - truth) ** 2).sum() / total) if total > 0 else float("nan")


@dataclass
class Validation:
    size: Size
    seeds: list[int]
    mouth_r2: float
    head_r2: float
    hands_r2: float
    lip_sync_min: float  # over the seeds with >= 1 s of talk
    lip_sync_mean: float


def validate(seeds: list[int], seconds: float = 8.0, size: Size = (256, 256)) -> Validation:
    """Estimates vs truth on ground-truth renders of `seeds` (synthetic audio only, fast)."""
    est, mouth, head, hands, sync = [], [], [], [], []
    for seed in seeds:
        clip = sample_clip(seed, seconds, size, espeak=False)
        est.append(FrameEstimates.of(clip.frames, clip.reference))
        mouth.append(clip.state.mouth_open)
        head.append(head_offset_truth(clip.state))
        hands.append(hand_offsets_truth(clip.state))
        if clip.mask.sum() >= 25:  # lip-sync needs >= 1 s of talk
            scores = score_video(clip.frames, clip.agent, clip.user, clip.mask, clip.reference)
            sync.append(scores["lip_sync"])
    e = FrameEstimates.concat(est)
    return Validation(
        size=size,
        seeds=list(seeds),
        mouth_r2=r_squared(e.mouth, np.concatenate(mouth)),
        head_r2=r_squared(e.head, np.concatenate(head)),
        hands_r2=r_squared(e.hands, np.concatenate(hands)),
        lip_sync_min=float(np.min(sync)),
        lip_sync_mean=float(np.mean(sync)),
    )

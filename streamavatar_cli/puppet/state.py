"""The per-frame motion of a puppet: one float32 array per channel, all zero = neutral.

Channels are in normalised units (the renderer maps them to pixels and degrees), so the
state is independent of the output size and is the ground truth written to `state.json`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

CHANNELS = (
    "mouth_open",  # 0 closed .. 1 fully open
    "mouth_width",  # -1 narrow (o) .. +1 wide (ee); 0 neutral
    "smile",  # 0 .. 1, mouth corners up (listening smiles)
    "jaw",  # 0 .. 1, chin drop (follows mouth_open, smoothed)
    "yaw",  # -1 .. 1, head turn (features shift sideways)
    "pitch",  # -1 .. 1, head nod (+ = down)
    "roll",  # -1 .. 1, head tilt (+ = clockwise)
    "blink",  # 0 open .. 1 closed
    "gaze_x",  # -1 .. 1, pupils left/right
    "gaze_y",  # -1 .. 1, pupils up/down (+ = down)
    "brow",  # 0 .. 1, eyebrow raise
    "shoulder",  # -1 .. 1, shoulder lift (+ = up)
    "hand_l_x",  # -1 .. 1, left hand offset from rest (viewer's left)
    "hand_l_y",  # -1 .. 1, (+ = up)
    "hand_r_x",
    "hand_r_y",
)


@dataclass
class PuppetState:
    """One float32 array of length n_frames per channel of `CHANNELS`."""

    mouth_open: np.ndarray
    mouth_width: np.ndarray
    smile: np.ndarray
    jaw: np.ndarray
    yaw: np.ndarray
    pitch: np.ndarray
    roll: np.ndarray
    blink: np.ndarray
    gaze_x: np.ndarray
    gaze_y: np.ndarray
    brow: np.ndarray
    shoulder: np.ndarray
    hand_l_x: np.ndarray
    hand_l_y: np.ndarray
    hand_r_x: np.ndarray
    hand_r_y: np.ndarray

    def __post_init__(self) -> None:
        lengths = set()
        for f in fields(self):
            value = np.asarray(getattr(self, f.name), dtype=np.float32).reshape(-1)
            setattr(self, f.name, value)
            lengths.add(len(value))
        if len(lengths) != 1:
            raise ValueError(f"PuppetState channels have different lengths {sorted(lengths)}")

    @property
    def n_frames(self) -> int:
        return len(self.mouth_open)

    def frame(self, j: int) -> dict[str, float]:
        """Channel values of frame j (the renderer draws one frame from this)."""
        return {name: float(getattr(self, name)[j]) for name in CHANNELS}

    def slice(self, start: int, stop: int) -> PuppetState:
        return PuppetState(**{name: getattr(self, name)[start:stop] for name in CHANNELS})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: {"n_frames", "fps", "channels": {name: [values rounded to 1e-4]}}."""
        from streamavatar_cli.config import FPS

        return {
            "n_frames": self.n_frames,
            "fps": FPS,
            "channels": {
                name: np.round(getattr(self, name).astype(np.float64), 4).tolist()
                for name in CHANNELS
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PuppetState:
        channels = data["channels"]
        unknown = set(channels) - set(CHANNELS)
        missing = set(CHANNELS) - set(channels)
        if unknown or missing:
            raise ValueError(
                f"state channels: unknown {sorted(unknown)}, missing {sorted(missing)}"
            )
        return cls(**{name: np.asarray(channels[name], np.float32) for name in CHANNELS})


def neutral_state(n_frames: int) -> PuppetState:
    """Mouth closed, head centred, eyes open and forward, hands at rest."""
    if n_frames < 0:
        raise ValueError(f"n_frames={n_frames} must be >= 0")
    return PuppetState(**{name: np.zeros(n_frames, np.float32) for name in CHANNELS})

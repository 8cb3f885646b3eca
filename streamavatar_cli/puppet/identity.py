"""Who a puppet is: every appearance choice, drawn once from a seed.

The mouth interior is the one colour shared by all identities (`MOUTH_INTERIOR`), and no
identity colour is allowed near it, so a pixel estimator (and a small model) can read the
mouth opening of any puppet the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RGB = tuple[int, int, int]

MOUTH_INTERIOR: RGB = (128, 0, 56)
"""Dark raspberry-maroon inside an open mouth, identical for every identity. No green: skin
tones, even the darkest, keep G >= 0.55 R, which keeps them >= 70 away from it."""

MIN_DISTANCE_TO_MOUTH = 80.0
"""Every identity colour is at least this far (RGB Euclidean) from `MOUTH_INTERIOR`."""

HAIR_STYLES = ("short", "long", "bob", "afro", "bun", "spiky", "bald")
ACCESSORIES = ("none", "glasses", "sunglasses", "earrings", "hat", "headband", "necklace")
PATTERNS = ("solid", "stripes", "dots", "vneck", "chevron")
PROPS = ("plant", "lamp", "frame", "window", "shelf", "mug")

_SKIN_TONES: tuple[RGB, ...] = (
    (255, 224, 196), (241, 194, 160), (224, 172, 130), (198, 144, 102),
    (168, 117, 80), (141, 92, 60), (112, 72, 48), (86, 56, 40),
)  # fmt: skip
_HAIR_COLOURS: tuple[RGB, ...] = (
    (30, 24, 20), (70, 45, 28), (120, 80, 40), (200, 160, 90), (230, 210, 150),
    (160, 60, 30), (120, 120, 125), (235, 235, 235), (60, 90, 200), (220, 90, 160),
)  # fmt: skip
_EYE_COLOURS: tuple[RGB, ...] = (
    (70, 45, 25),
    (40, 90, 160),
    (60, 130, 70),
    (110, 110, 120),
    (150, 110, 40),
)


@dataclass(frozen=True)
class Identity:
    """Appearance of one puppet; geometry in units of a 256x256 canvas (scaled when drawn)."""

    seed: int
    skin: RGB
    lips: RGB
    hair: RGB
    hair_style: str
    eyes: RGB
    clothes: RGB
    clothes_alt: RGB
    pattern: str
    accessory: str
    accessory_colour: RGB
    background_top: RGB
    background_bottom: RGB
    prop: str
    prop_colour: RGB
    prop_side: int  # -1 left, +1 right
    face_rx: float  # face half-width
    face_ry: float  # face half-height
    chin: float  # 0 round .. 1 pointed
    eye_spacing: float
    eye_size: float
    brow_thickness: float
    nose: float  # nose length
    shoulder_width: float


def _distance(a: RGB, b: RGB) -> float:
    return float(np.linalg.norm(np.subtract(a, b, dtype=np.float64)))


def _clip(colour: np.ndarray) -> RGB:
    c = np.clip(np.round(colour), 0, 255).astype(int)
    return (int(c[0]), int(c[1]), int(c[2]))


def _random_colour(rng: np.random.Generator, avoid: list[RGB], spread: float = 255) -> RGB:
    """A colour far from the mouth interior and from the colours it must contrast with."""
    for _ in range(100):
        c = _clip(rng.uniform(0, spread, 3) + (255 - spread) * rng.uniform(0, 1))
        if _distance(c, MOUTH_INTERIOR) >= MIN_DISTANCE_TO_MOUTH and all(
            _distance(c, a) >= 60 for a in avoid
        ):
            return c
    return (200, 200, 200)


def _jitter(rng: np.random.Generator, base: RGB, amount: float) -> RGB:
    return _clip(np.asarray(base, dtype=np.float64) + rng.normal(0, amount, 3))


def _lips_for(skin: RGB) -> RGB:
    """Lips a little darker and redder than the skin, kept away from the mouth interior."""
    lips = np.asarray(skin, dtype=np.float64) * np.array([0.88, 0.62, 0.62]) + [18, 0, 0]
    while _distance(_clip(lips), MOUTH_INTERIOR) < MIN_DISTANCE_TO_MOUTH:
        lips = lips + [14, 12, 10]
    return _clip(lips)


def identity_from_seed(seed: int) -> Identity:
    """The identity of `seed`: the same seed always gives the same puppet."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(seed) >> 32 & 0xFFFFFFFF, 11])
    skin = _jitter(rng, _SKIN_TONES[rng.integers(len(_SKIN_TONES))], 6)
    hair = _jitter(rng, _HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))], 8)
    if _distance(hair, MOUTH_INTERIOR) < MIN_DISTANCE_TO_MOUTH:
        hair = (30, 24, 20) if _distance((30, 24, 20), MOUTH_INTERIOR) >= 80 else (10, 10, 10)
    bg_top = _random_colour(rng, [skin, hair])
    bg_bottom = _clip(np.asarray(bg_top) * rng.uniform(0.6, 1.0) + rng.normal(0, 20, 3))
    if _distance(bg_bottom, MOUTH_INTERIOR) < MIN_DISTANCE_TO_MOUTH:
        bg_bottom = bg_top
    clothes = _random_colour(rng, [skin, bg_bottom])
    return Identity(
        seed=int(seed),
        skin=skin,
        lips=_lips_for(skin),
        hair=hair,
        hair_style=HAIR_STYLES[rng.integers(len(HAIR_STYLES))],
        eyes=_EYE_COLOURS[rng.integers(len(_EYE_COLOURS))],
        clothes=clothes,
        clothes_alt=_random_colour(rng, [clothes]),
        pattern=PATTERNS[rng.integers(len(PATTERNS))],
        accessory=ACCESSORIES[rng.integers(len(ACCESSORIES))],
        accessory_colour=_random_colour(rng, [skin]),
        background_top=bg_top,
        background_bottom=bg_bottom,
        prop=PROPS[rng.integers(len(PROPS))],
        prop_colour=_random_colour(rng, [bg_top, bg_bottom]),
        prop_side=int(rng.choice([-1, 1])),
        face_rx=float(rng.uniform(38, 48)),
        face_ry=float(rng.uniform(48, 58)),
        chin=float(rng.uniform(0.0, 1.0)),
        eye_spacing=float(rng.uniform(15, 20)),
        eye_size=float(rng.uniform(6.0, 8.0)),
        brow_thickness=float(rng.uniform(2.5, 4.5)),
        nose=float(rng.uniform(6, 12)),
        shoulder_width=float(rng.uniform(78, 96)),
    )

"""The parts of a frame that do not follow the face: background, prop, torso and neck.

They are drawn once per identity, size and (quantised) shoulder height and cached, which is
most of why the renderer reaches hundreds of frames per second. Coordinates are in units of
a 256x256 canvas; `Canvas` maps them to supersampled pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from streamavatar_cli.puppet.identity import RGB, Identity

SUPERSAMPLE = 2
"""Frames are drawn at 2x and box-downsampled: anti-aliasing for Pillow's aliased shapes."""

HEAD_CENTRE = (128.0, 94.0)
SHOULDER_Y = 182.0
SHOULDER_TRAVEL = 4.0
"""Shoulder lift of +-1 in units of the 256 canvas."""


@dataclass(frozen=True)
class Canvas:
    """Maps 256-canvas units to supersampled pixels of a W x H frame (centred, uniform)."""

    width: int
    height: int

    @property
    def scale(self) -> float:
        return SUPERSAMPLE * min(self.width, self.height) / 256.0

    @property
    def offset(self) -> tuple[float, float]:
        s = self.scale * 256.0
        return (SUPERSAMPLE * self.width - s) / 2.0, SUPERSAMPLE * self.height - s

    @property
    def big(self) -> tuple[int, int]:
        return SUPERSAMPLE * self.width, SUPERSAMPLE * self.height

    def px(self, points: np.ndarray) -> list[float]:
        """[..., 2] canvas units -> flat list of supersampled pixel coordinates for Pillow."""
        ox, oy = self.offset
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2) * self.scale + (ox, oy)
        return p.ravel().tolist()

    def box(self, cx: float, cy: float, rx: float, ry: float) -> list[float]:
        return self.px(np.array([[cx - rx, cy - ry], [cx + rx, cy + ry]]))


def shade(colour: RGB, factor: float) -> RGB:
    return tuple(int(max(0, min(255, round(c * factor)))) for c in colour)  # type: ignore[return-value]


def ellipse_points(cx: float, cy: float, rx: float, ry: float, n: int = 32) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _gradient(identity: Identity, canvas: Canvas) -> Image.Image:
    w, h = canvas.big
    top = np.asarray(identity.background_top, np.float32)
    bottom = np.asarray(identity.background_bottom, np.float32)
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    column = (top * (1 - t) + bottom * t).round().astype(np.uint8)
    return Image.fromarray(np.repeat(column[:, None, :], w, axis=1), "RGB")


def _draw_prop(draw: ImageDraw.ImageDraw, identity: Identity, c: Canvas) -> None:
    x = 128 + identity.prop_side * 96  # centre of the prop, beside the head
    col, dark = identity.prop_colour, shade(identity.prop_colour, 0.6)
    kind = identity.prop
    if kind == "plant":
        draw.polygon(
            c.px(np.array([[x - 14, 132], [x + 14, 132], [x + 10, 160], [x - 10, 160]])), fill=dark
        )
        for dx, dy, r in ((-10, 112, 11), (9, 108, 12), (0, 96, 12), (-4, 122, 9), (8, 124, 8)):
            draw.ellipse(c.box(x + dx, dy, r, r * 1.3), fill=(50, 140, 60))
    elif kind == "lamp":
        draw.rectangle(c.px(np.array([[x - 2, 70], [x + 2, 160]])), fill=dark)
        draw.polygon(
            c.px(np.array([[x - 8, 44], [x + 8, 44], [x + 18, 72], [x - 18, 72]])), fill=col
        )
        draw.rectangle(c.px(np.array([[x - 12, 156], [x + 12, 162]])), fill=dark)
    elif kind == "frame":
        draw.rectangle(c.px(np.array([[x - 22, 40], [x + 22, 96]])), fill=dark)
        draw.rectangle(c.px(np.array([[x - 17, 45], [x + 17, 91]])), fill=col)
        draw.polygon(
            c.px(np.array([[x - 17, 91], [x - 4, 62], [x + 6, 78], [x + 17, 66], [x + 17, 91]])),
            fill=shade(col, 0.8),
        )
    elif kind == "window":
        draw.rectangle(c.px(np.array([[x - 26, 24], [x + 26, 110]])), fill=(235, 235, 230))
        draw.rectangle(c.px(np.array([[x - 22, 28], [x + 22, 106]])), fill=(150, 200, 240))
        draw.rectangle(c.px(np.array([[x - 1.5, 28], [x + 1.5, 106]])), fill=(235, 235, 230))
        draw.rectangle(c.px(np.array([[x - 22, 65], [x + 22, 68]])), fill=(235, 235, 230))
    elif kind == "shelf":
        draw.rectangle(c.px(np.array([[x - 30, 100], [x + 30, 105]])), fill=dark)
        for i, (bw, bh) in enumerate(((7, 26), (6, 30), (8, 22), (6, 28))):
            bx = x - 24 + i * 11
            draw.rectangle(
                c.px(np.array([[bx, 100 - bh], [bx + bw, 100]])), fill=shade(col, 0.7 + 0.12 * i)
            )
    else:  # mug on a small table
        draw.rectangle(c.px(np.array([[x - 26, 140], [x + 26, 146]])), fill=dark)
        draw.rectangle(c.px(np.array([[x - 10, 116], [x + 8, 140]])), fill=col)
        draw.ellipse(c.box(x + 11, 128, 6, 7), outline=col, width=max(1, round(3 * c.scale)))


def _torso_polygon(identity: Identity, lift: float) -> np.ndarray:
    sw, top = identity.shoulder_width, SHOULDER_Y - lift
    xs = np.linspace(-sw, sw, 33)
    ys = top + 22 * np.abs(xs / sw) ** 2.5 - 8 * (1 - np.abs(xs / sw)) ** 2
    upper = np.stack([128 + xs, ys], axis=1)
    bottom = np.array([[128 + sw + 6, 262.0], [128 - sw - 6, 262.0]])
    return np.concatenate([upper, bottom])


def _draw_pattern(identity: Identity, c: Canvas, torso: list[float], lift: float) -> Image.Image:
    """The clothes with their pattern, as an image the torso shape is cut from."""
    layer = Image.new("RGB", c.big, identity.clothes)
    d = ImageDraw.Draw(layer)
    alt, top = identity.clothes_alt, SHOULDER_Y - lift
    if identity.pattern == "stripes":
        for y in np.arange(top, 262, 14):
            d.rectangle(c.px(np.array([[0, y], [256, y + 6]])), fill=alt)
    elif identity.pattern == "dots":
        for row, y in enumerate(np.arange(top + 8, 262, 16)):
            for x in np.arange(20 + 8 * (row % 2), 240, 16):
                d.ellipse(c.box(x, y, 3.5, 3.5), fill=alt)
    elif identity.pattern == "chevron":
        for y in np.arange(top + 10, 262, 18):
            d.line(
                c.px(np.array([[20, y - 10], [128, y + 10], [236, y - 10]])),
                fill=alt,
                width=round(5 * c.scale),
            )
    mask = Image.new("L", c.big, 0)
    ImageDraw.Draw(mask).polygon(torso, fill=255)
    return layer, mask


def draw_static(identity: Identity, canvas: Canvas, lift: float) -> Image.Image:
    """Background, prop, torso (with pattern, collar, necklace) and neck at shoulder `lift`."""
    img = _gradient(identity, canvas)
    draw = ImageDraw.Draw(img)
    _draw_prop(draw, identity, canvas)
    hx, hy = HEAD_CENTRE
    neck = np.array(
        [
            [hx - 14, hy + 30],
            [hx + 14, hy + 30],
            [hx + 15, SHOULDER_Y + 6 - lift],
            [hx - 15, SHOULDER_Y + 6 - lift],
        ]
    )
    draw.polygon(canvas.px(neck), fill=shade(identity.skin, 0.85))
    torso = canvas.px(_torso_polygon(identity, lift))
    layer, mask = _draw_pattern(identity, canvas, torso, lift)
    img.paste(layer, (0, 0), mask)
    top = SHOULDER_Y - lift
    if identity.pattern == "vneck":
        draw.polygon(
            canvas.px(np.array([[hx - 18, top - 7], [hx + 18, top - 7], [hx, top + 22]])),
            fill=identity.clothes_alt,
        )
    draw.polygon(
        canvas.px(np.array([[hx - 14, top - 8], [hx + 14, top - 8], [hx, top + 10]])),
        fill=shade(identity.skin, 0.85),
    )
    if identity.accessory == "necklace":
        arc = np.stack(
            [
                hx + 18 * np.cos(np.linspace(0.2, np.pi - 0.2, 12)),
                top - 6 + 16 * np.sin(np.linspace(0.2, np.pi - 0.2, 12)),
            ],
            1,
        )
        draw.line(canvas.px(arc), fill=identity.accessory_colour, width=round(2.5 * canvas.scale))
        draw.ellipse(canvas.box(hx, top + 11, 3.5, 3.5), fill=identity.accessory_colour)
    return img

"""Drawing puppet frames: the cached scene plus a head and two arms posed by the state.

Every shape is a polygon in 256-canvas units, posed with one 2D transform per frame (nod,
tilt, turn), drawn by Pillow at 2x and box-downsampled, so lines and features scale with the
output size and edges are anti-aliased. Motion amplitudes (units of the 256 canvas) are
chosen to be visible at 128x128: a full nod moves the head 7 units (3.5 px at 128), a
gesture moves a hand up to 44 units.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from streamavatar_cli.puppet.identity import MOUTH_INTERIOR, Identity
from streamavatar_cli.puppet.scene import (
    HEAD_CENTRE,
    SHOULDER_TRAVEL,
    SHOULDER_Y,
    SUPERSAMPLE,
    Canvas,
    draw_static,
    ellipse_points,
    shade,
)
from streamavatar_cli.puppet.state import PuppetState, neutral_state

NOD_UNITS = 10.0  # head moves down this much at pitch = 1 (5 px at 128: most of a latent cell)
FEATURE_PITCH_UNITS = 0.0  # nods are rigid: the face keypoints move with the outline
TURN_UNITS = 8.0  # features shift sideways at yaw = 1
TILT_DEGREES = 12.0  # roll = 1
MOUTH_OPEN_UNITS = 16.0  # interior height at mouth_open = 1
HAND_X_UNITS, HAND_Y_UNITS = 30.0, 38.0
HAND_REST_X, HAND_REST_Y = 36.0, 236.0  # rest: x = 128 -+ 36 (left, right), y = 236
PIVOT_Y = 40.0  # the head tilts about the neck, this far below the face centre
EYE_LINE_UNITS = 4.0  # the eyes sit about this far above the face centre (0.08 face_ry)

Size = tuple[int, int]


def _check_size(size: Size) -> Size:
    w, h = (int(v) for v in size)
    if w < 16 or h < 16:
        raise ValueError(f"size {w}x{h} is too small; use at least 16x16 (e.g. 128x128)")
    return w, h


@lru_cache(maxsize=64)
def _static(identity: Identity, size: Size, lift_px: int) -> Image.Image:
    canvas = Canvas(*size)
    return draw_static(identity, canvas, lift_px / canvas.scale)


def _pose(points: np.ndarray, f: dict[str, float], feature: bool) -> np.ndarray:
    """Head-local points -> canvas: features shift with turn and nod, then tilt, then place."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2).copy()
    if feature:
        p[:, 0] += TURN_UNITS * f["yaw"]
        p[:, 1] += FEATURE_PITCH_UNITS * f["pitch"]
    else:
        p[:, 0] += 0.25 * TURN_UNITS * f["yaw"]
    a = np.deg2rad(TILT_DEGREES * f["roll"])
    x, y = p[:, 0], p[:, 1] - PIVOT_Y
    p = np.stack([x * np.cos(a) - y * np.sin(a), x * np.sin(a) + y * np.cos(a) + PIVOT_Y], 1)
    return p + (HEAD_CENTRE[0] + 2.0 * f["yaw"], HEAD_CENTRE[1] + NOD_UNITS * f["pitch"])


def _face_outline(idt: Identity, jaw: float) -> np.ndarray:
    p = ellipse_points(0, 0, idt.face_rx, idt.face_ry, 48)
    below = np.clip(p[:, 1] / idt.face_ry, 0, 1)
    p[:, 0] *= 1 - 0.3 * idt.chin * below**2
    p[:, 1] += 5.0 * jaw * below
    return p


def _hair_back(idt: Identity) -> list[np.ndarray]:
    rx, ry = idt.face_rx, idt.face_ry
    if idt.hair_style == "afro":
        return [ellipse_points(0, -0.25 * ry, 1.45 * rx, 1.1 * ry, 40)]
    if idt.hair_style == "long":
        return [
            np.array(
                [
                    [s * (rx - 10), -0.2 * ry],
                    [s * (rx + 9), -0.1 * ry],
                    [s * (rx + 12), ry + 30],
                    [s * (rx - 6), ry + 30],
                ]
            )
            for s in (-1, 1)
        ] + [ellipse_points(0, -0.15 * ry, rx + 8, ry * 0.95, 32)]
    if idt.hair_style == "bun":
        return [ellipse_points(0, -ry - 6, 0.42 * rx, 0.36 * ry, 24)]
    return []


def _hair_front(idt: Identity) -> list[np.ndarray]:
    rx, ry = idt.face_rx, idt.face_ry
    style = idt.hair_style
    if style == "bald":
        return []
    t = np.linspace(np.pi, 2 * np.pi, 25)
    cap = np.stack([(rx + 4) * np.cos(t), -3 + (ry + 4) * np.sin(t)], 1)
    fringe_y = -0.42 * ry
    xs = np.linspace(rx + 4, -(rx + 4), 9)
    fringe = np.stack([xs, fringe_y + 4 * np.cos(xs / rx * 6)], 1)
    fringe[0, 1] = fringe[-1, 1] = 0.05 * ry
    shapes = [np.concatenate([cap, fringe])]
    if style == "spiky":
        xs = np.linspace(-rx, rx, 9)
        tips = np.stack([xs, -ry - 4 - 10 * (np.arange(9) % 2) * np.cos(xs / rx)], 1)
        shapes.append(np.concatenate([tips, [[rx, -0.5 * ry], [-rx, -0.5 * ry]]]))
    if style == "bob":
        shapes += [
            np.array(
                [
                    [s * (rx + 4), -0.1 * ry],
                    [s * (rx - 6), -0.1 * ry],
                    [s * (rx - 4), 0.6 * ry],
                    [s * (rx + 6), 0.6 * ry],
                ]
            )
            for s in (-1, 1)
        ]
    return shapes


def _mouth(idt: Identity, f: dict[str, float]) -> tuple[np.ndarray, np.ndarray | None]:
    """Lips polygon and (when open) the interior polygon, in head-local units."""
    half_w = 12.0 * (1 + 0.22 * f["mouth_width"]) + 2.0 * f["smile"]
    h = MOUTH_OPEN_UNITS * max(0.0, f["mouth_open"])
    t = np.linspace(-1, 1, 17)
    arch = np.sqrt(1 - t**2)
    lift = -4.0 * f["smile"] * t**2
    cy = 0.5 * idt.face_ry + 2.5 * f["jaw"]
    upper = np.stack([half_w * t, cy + lift - 0.3 * h * arch], 1)
    lower = np.stack([half_w * t, cy + lift + 0.7 * h * arch], 1)[::-1]
    lip = 2.4
    up = np.stack([0 * t, lip * arch + 0.6], 1)
    lips = np.concatenate([upper - up, lower + up[::-1]])
    inner = np.concatenate([upper, lower]) if h > 0.4 else None
    return lips, inner


def _eye_shapes(idt: Identity, f: dict[str, float], side: int) -> list[tuple[np.ndarray, tuple]]:
    ex, ey, r = side * idt.eye_spacing, -0.08 * idt.face_ry, idt.eye_size
    open_ = max(0.08, 1 - f["blink"])
    shapes = [(ellipse_points(ex, ey, 1.35 * r, r * open_, 24), (250, 250, 250))]
    if open_ > 0.35:
        gx, gy = ex + 0.45 * r * f["gaze_x"], ey + 0.3 * r * f["gaze_y"]
        ir = 0.72 * r
        shapes.append((ellipse_points(gx, gy, ir, min(ir, r * open_), 20), idt.eyes))
        shapes.append(
            (ellipse_points(gx, gy, 0.36 * r, min(0.36 * r, r * open_), 12), (15, 15, 20))
        )
        shapes.append(
            (ellipse_points(gx + 0.25 * r, gy - 0.25 * r, 0.15 * r, 0.15 * r, 8), (255, 255, 255))
        )
    lid_y = ey - r * open_
    shapes.append(
        (
            np.array(
                [
                    [ex - 1.45 * r, lid_y - 1.2],
                    [ex + 1.45 * r, lid_y - 1.2],
                    [ex + 1.45 * r, lid_y + 0.8],
                    [ex - 1.45 * r, lid_y + 0.8],
                ]
            ),
            shade(idt.skin, 0.55),
        )
    )
    by = ey - r - 5 - 6 * f["brow"]
    th = idt.brow_thickness
    brow = np.array(
        [
            [ex - side * 1.4 * r, by + 2],
            [ex, by - 2],
            [ex + side * 1.5 * r, by + 1],
            [ex + side * 1.5 * r, by + 1 + th],
            [ex, by - 2 + th],
            [ex - side * 1.4 * r, by + 2 + th],
        ]
    )
    shapes.append(
        (brow, shade(idt.hair, 0.8) if idt.hair_style != "bald" else shade(idt.skin, 0.5))
    )
    return shapes


def _draw_head(draw: ImageDraw.ImageDraw, c: Canvas, idt: Identity, f: dict[str, float]) -> None:
    def poly(points: np.ndarray, fill, feature: bool = True) -> None:
        draw.polygon(c.px(_pose(points, f, feature)), fill=fill)

    hair = idt.hair
    for shape in _hair_back(idt):
        poly(shape, shade(hair, 0.85), feature=False)
    for s in (-1, 1):
        poly(
            ellipse_points(s * idt.face_rx, 0.05 * idt.face_ry, 6, 10, 16),
            shade(idt.skin, 0.9),
            False,
        )
        if idt.accessory == "earrings":
            poly(
                ellipse_points(s * idt.face_rx, 0.05 * idt.face_ry + 13, 3, 3, 10),
                idt.accessory_colour,
                False,
            )
    poly(_face_outline(idt, f["jaw"]), idt.skin, feature=False)
    for shape in _hair_front(idt):
        poly(shape, hair, feature=False)
    for side in (-1, 1):
        for shape, fill in _eye_shapes(idt, f, side):
            poly(shape, fill)
    n = idt.nose
    poly(
        np.array([[0, 0.1 * idt.face_ry], [-4, 0.1 * idt.face_ry + n], [4, 0.1 * idt.face_ry + n]]),
        shade(idt.skin, 0.8),
    )
    lips, inner = _mouth(idt, f)
    poly(lips, idt.lips)
    if inner is not None:
        poly(inner, MOUTH_INTERIOR)
    _draw_accessory(draw, c, idt, f)


def _draw_accessory(
    draw: ImageDraw.ImageDraw, c: Canvas, idt: Identity, f: dict[str, float]
) -> None:
    acc, col = idt.accessory, idt.accessory_colour
    ey, r, sx = -0.08 * idt.face_ry, idt.eye_size, idt.eye_spacing
    width = max(1, round(2.0 * c.scale))
    if acc in ("glasses", "sunglasses"):
        for s in (-1, 1):
            ring = _pose(ellipse_points(s * sx, ey, 1.9 * r, 1.5 * r, 24), f, True)
            if acc == "sunglasses":
                draw.polygon(c.px(ring), fill=(10, 10, 10))
            draw.line(c.px(np.concatenate([ring, ring[:1]])), fill=col, width=width)
        bridge = _pose(np.array([[-sx + 1.9 * r, ey], [sx - 1.9 * r, ey]]), f, True)
        draw.line(c.px(bridge), fill=col, width=width)
    elif acc == "hat":
        rx, ry = idt.face_rx, idt.face_ry
        draw.polygon(
            c.px(
                _pose(
                    np.array(
                        [
                            [-rx - 14, -0.55 * ry],
                            [rx + 14, -0.55 * ry],
                            [rx + 14, -0.55 * ry - 7],
                            [-rx - 14, -0.55 * ry - 7],
                        ]
                    ),
                    f,
                    False,
                )
            ),
            fill=col,
        )
        draw.polygon(
            c.px(
                _pose(
                    np.array(
                        [
                            [-rx * 0.75, -0.55 * ry - 6],
                            [rx * 0.75, -0.55 * ry - 6],
                            [rx * 0.6, -ry - 16],
                            [-rx * 0.6, -ry - 16],
                        ]
                    ),
                    f,
                    False,
                )
            ),
            fill=shade(col, 0.8),
        )
    elif acc == "headband":
        rx, ry = idt.face_rx, idt.face_ry
        t = np.linspace(np.pi * 1.08, np.pi * 1.92, 16)
        band = np.stack([(rx + 5) * np.cos(t), -0.1 * ry + (ry + 5) * np.sin(t)], 1)
        draw.line(c.px(_pose(band, f, False)), fill=col, width=max(1, round(5 * c.scale)))


def _draw_arms(
    draw: ImageDraw.ImageDraw, c: Canvas, idt: Identity, f: dict[str, float], lift: float
) -> None:
    sleeve, hand = shade(idt.clothes, 0.82), shade(idt.skin, 0.95)
    arm_w = max(1, round(17 * c.scale))
    for side, hx, hy in ((-1, f["hand_l_x"], f["hand_l_y"]), (1, f["hand_r_x"], f["hand_r_y"])):
        shoulder = np.array([128 + side * (idt.shoulder_width - 12), SHOULDER_Y + 14 - lift])
        rest = np.array([128 + side * HAND_REST_X, HAND_REST_Y])
        hand_pos = rest + (HAND_X_UNITS * hx * side, -HAND_Y_UNITS * hy)
        elbow = np.array([128 + side * (idt.shoulder_width - 4), 250.0]) + 0.3 * (hand_pos - rest)
        draw.line(
            c.px(np.stack([shoulder, elbow, hand_pos])), fill=sleeve, width=arm_w, joint="curve"
        )
        draw.ellipse(c.box(*elbow, 8.5, 8.5), fill=sleeve)
        draw.ellipse(c.box(*hand_pos, 10.5, 9.5), fill=hand)
        draw.ellipse(c.box(hand_pos[0] - side * 8, hand_pos[1] - 5, 4, 3.2), fill=hand)


def _render_one(idt: Identity, size: Size, f: dict[str, float]) -> np.ndarray:
    canvas = Canvas(*size)
    lift_px = int(round(SHOULDER_TRAVEL * f["shoulder"] * canvas.scale))
    img = _static(idt, size, lift_px).copy()
    draw = ImageDraw.Draw(img)
    _draw_head(draw, canvas, idt, f)
    _draw_arms(draw, canvas, idt, f, lift_px / canvas.scale)
    return np.asarray(img.reduce(SUPERSAMPLE))


def head_offset_truth(state: PuppetState) -> np.ndarray:
    """[n, 2] displacement from neutral of the point between the eyes (canvas units): the
    face keypoint a tracker reports, and the truth `metrics.head_offsets` is validated on."""
    a = np.deg2rad(TILT_DEGREES * state.roll.astype(np.float64))
    shift = TURN_UNITS * state.yaw
    r = PIVOT_Y + EYE_LINE_UNITS
    x = shift * np.cos(a) + r * np.sin(a) + 2.0 * state.yaw
    y = shift * np.sin(a) + r * (1 - np.cos(a)) + (NOD_UNITS + FEATURE_PITCH_UNITS) * state.pitch
    return np.stack([x, y], 1)


def hand_offsets_truth(state: PuppetState) -> np.ndarray:
    """[n, 4] hand centre offsets from rest (left x, y, right x, y; canvas units, y down)."""
    return np.stack(
        [
            -HAND_X_UNITS * state.hand_l_x,
            -HAND_Y_UNITS * state.hand_l_y,
            HAND_X_UNITS * state.hand_r_x,
            -HAND_Y_UNITS * state.hand_r_y,
        ],
        1,
    ).astype(np.float64)


def render_frames(identity: Identity, state: PuppetState, size: Size = (256, 256)) -> np.ndarray:
    """uint8 [n_frames, H, W, 3]: one frame per state row."""
    w, h = _check_size(size)
    out = np.empty((state.n_frames, h, w, 3), dtype=np.uint8)
    for j in range(state.n_frames):
        out[j] = _render_one(identity, (w, h), state.frame(j))
    return out


def render_reference(identity: Identity, size: Size = (256, 256)) -> np.ndarray:
    """uint8 [H, W, 3]: the neutral frame, the reference image a model is conditioned on."""
    return render_frames(identity, neutral_state(1), size)[0]

"""The reference image: output size, loading any image file, and fitting it to that size.

The model sees the reference as a [3, H, W] tensor in [-1, 1] whose sides are multiples of the
model's pixel stride (VAE spatial stride x DiT patch). Sizing follows Wan2.2 TI2V's
preprocessing (wan22-backbone.md section 1.5): keep the aspect ratio, stay within a pixel
budget, resize with LANCZOS so the image covers the target, then centre-crop. `fit="pad"`
instead fits the whole image inside the target and fills the bars with the mean colour of the
edges they touch (docs/design.md, "Reference image").
"""

from __future__ import annotations

import math
import re
import struct
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from streamavatar_cli.errors import InputError, check_input_file

Fit = Literal["crop", "pad"]

MAX_RESOLUTION_SIDE = 8192
"""Largest side accepted by `--resolution` (8K): anything larger is a typo, not a request."""

MIN_IMAGE_SIDE = 32
"""Smallest side of a usable reference image; below this there is no face to animate."""

MAX_IMAGE_ASPECT = 8.0
"""Widest (or tallest) reference accepted; beyond 8:1 the person would be a sliver."""

MAX_IMAGE_PIXELS = 90_000_000
"""Pixel count above which an image is refused before decoding (decompression-bomb guard).

90 MP is about Pillow's own warning threshold; a reference is resized to about 1 MP anyway.
"""

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)
# EXIF orientations 5-8 rotate by 90 degrees, which swaps width and height.
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)
_EXIF_ORIENTATION = 0x0112


# --------------------------------------------------------------------------------------
# Output size


def parse_resolution(text: str, *, stride: int | None = None) -> tuple[int, int]:
    """Parse "WxH" (or "W*H", Wan's spelling) into (width, height).

    With `stride`, the sides must also be multiples of it (see `check_resolution`).
    """
    match = re.fullmatch(r"\s*([+-]?\d+)\s*[xX*×]\s*([+-]?\d+)\s*", text)
    if match is None:
        raise InputError(
            f"resolution {text!r} is not of the form WIDTHxHEIGHT; write it like 1280x704."
        )
    if max(len(match.group(1)), len(match.group(2))) > 9:  # int() refuses thousands of digits
        raise InputError(
            f"resolution {text[:40]!r} is too large; each side must be at most "
            f"{MAX_RESOLUTION_SIDE} pixels."
        )
    width, height = int(match.group(1)), int(match.group(2))
    if width <= 0 or height <= 0:
        raise InputError(f"resolution {text!r} has a side <= 0; both sides must be positive.")
    if max(width, height) > MAX_RESOLUTION_SIDE:
        raise InputError(
            f"resolution {width}x{height} is too large; each side must be at most "
            f"{MAX_RESOLUTION_SIDE} pixels."
        )
    if stride is not None:
        check_resolution(width, height, stride)
    return width, height


def _nearest_multiples(value: int, stride: int) -> list[int]:
    below = max(stride, value // stride * stride)
    return sorted({below, below + stride}, key=lambda m: (abs(m - value), m))


def check_resolution(width: int, height: int, stride: int) -> None:
    """Refuse sides that are not multiples of `stride`, naming the nearest valid sizes.

    The VAE downsamples by its spatial stride and the DiT patchifies the latent, so any other
    size would be cropped or padded silently; we ask the user to choose instead.
    """
    if width <= 0 or height <= 0:
        raise InputError(f"resolution {width}x{height} has a side <= 0; both must be positive.")
    if width % stride == 0 and height % stride == 0:
        return
    candidates = sorted(
        {
            (w, h)
            for w in _nearest_multiples(width, stride)
            for h in _nearest_multiples(height, stride)
        },
        key=lambda wh: (abs(wh[0] - width) + abs(wh[1] - height), wh),
    )
    nearest = ", ".join(f"{w}x{h}" for w, h in candidates[:3])
    raise InputError(
        f"resolution {width}x{height} is not a multiple of {stride} (this model's pixel stride) "
        f"on both sides; nearest valid sizes: {nearest}."
    )


def _round_to(value: float, stride: int) -> int:
    """Nearest multiple of `stride`, never below one stride."""
    return max(stride, int(math.floor(value / stride + 0.5)) * stride)


def choose_size(
    image_w: int,
    image_h: int,
    *,
    stride: int,
    max_area: int,
    resolution: tuple[int, int] | None = None,
) -> tuple[int, int]:
    """Output (W, H): the explicit `resolution` if given, else the largest stride-aligned size
    of the image's aspect ratio within `max_area` pixels.

    Rule: each candidate fixes one side at k * stride and rounds the other to the nearest
    multiple of stride, so its aspect is off by at most half a stride step on one side; among
    candidates with W * H <= max_area the largest area wins, ties going to the closer aspect.
    Wan's `best_output_size` floors both sides of two candidates and keeps the closer aspect,
    so its error is bounded by a whole step, not half (a square image gives 960x928 there,
    928x928 here). Both agree on Wan's own sizes and on 1920x1080 -> 1248x704.
    """
    if resolution is not None:
        width, height = resolution
        check_resolution(width, height, stride)
        return width, height
    if image_w < 1 or image_h < 1:
        raise ValueError(f"image size {image_w}x{image_h} must be positive")
    if stride < 1 or max_area < stride * stride:
        raise ValueError(
            f"pixel budget max_area={max_area} (--area) is below one {stride}x{stride} block; "
            f"give at least {stride * stride}"
        )
    ratio = image_w / image_h
    best: tuple[tuple[int, float], tuple[int, int]] | None = None
    for k in range(1, max_area // (stride * stride) + 1):
        side = k * stride
        for w, h in (
            (side, _round_to(side / ratio, stride)),
            (_round_to(side * ratio, stride), side),
        ):
            if w * h > max_area:
                continue
            key = (w * h, -abs(math.log(w / h / ratio)))
            if best is None or key > best[0]:
                best = (key, (w, h))
    assert best is not None  # k = 1 gives (stride, stride) at worst, which fits
    return best[1]


# --------------------------------------------------------------------------------------
# Opening and checking


def _oriented_size(image: Image.Image) -> tuple[int, int]:
    """Size as displayed, i.e. after the EXIF orientation is applied."""
    width, height = image.size
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except _DECODE_ERRORS:
        orientation = 1  # unreadable EXIF: exif_transpose will ignore it as well
    return (height, width) if orientation in _SWAPPING_ORIENTATIONS else (width, height)


def _check_dimensions(path: Path, width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(
            f"reference image {path} is {width}x{height} ({width * height / 1e6:.0f} megapixels), "
            f"above the {MAX_IMAGE_PIXELS / 1e6:.0f} megapixel limit; downscale it first."
        )
    if min(width, height) < MIN_IMAGE_SIDE:
        raise InputError(
            f"reference image {path} is only {width}x{height} pixels; each side must be at "
            f"least {MIN_IMAGE_SIDE} pixels, use a larger image."
        )
    aspect = max(width, height) / min(width, height)
    if aspect > MAX_IMAGE_ASPECT:
        raise InputError(
            f"reference image {path} is {width}x{height}, an aspect ratio of {aspect:.1f}:1; "
            f"at most {MAX_IMAGE_ASPECT:.0f}:1 is supported, crop it around the person first."
        )


def _open(path: Path) -> Image.Image:
    """Open lazily (header only) and refuse unusable files before any pixel is decoded."""
    check_input_file(path, "reference image", "an image file", "re-export or re-copy it")
    try:
        with warnings.catch_warnings():
            # Our own MAX_IMAGE_PIXELS check below replaces Pillow's warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as e:
        raise InputError(
            f"reference image {path} is too large to decode safely ({e}); downscale it first."
        ) from e
    except UnidentifiedImageError as e:
        raise InputError(
            f"{path} is not an image file this tool can read; use a PNG, JPEG or WebP image."
        ) from e
    except PermissionError as e:
        raise InputError(f"cannot read reference image {path}; check its permissions.") from e
    try:
        _check_dimensions(path, *_oriented_size(image))
    except BaseException:
        image.close()
        raise
    return image


def reference_image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) as displayed (EXIF orientation applied), reading only the header.

    Runs every check `load_reference_image` runs before decoding, so the CLI can choose the
    output size and fail on a bad image before loading any model.
    """
    with _open(Path(path)) as image:
        return _oriented_size(image)


# --------------------------------------------------------------------------------------
# Decoding to RGB


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """16-bit / 32-bit / float greyscale to 8-bit "L", scaled rather than clipped.

    Pillow's own convert() clips I;16 values at 255, which turns a 16-bit scan white.
    """
    values = np.asarray(image).astype(np.float64)
    peak = float(values.max(initial=0.0))
    if image.mode.startswith("I;16"):
        full_scale = 65535.0
    elif image.mode == "I":
        full_scale = 65535.0 if peak > 255 else 255.0
    else:  # "F": either [0, 1] or [0, 255] by convention
        full_scale = 1.0 if peak <= 1.0 else 255.0
    scaled = np.clip(np.rint(values / full_scale * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB; transparency is composited on white (how viewers show it)."""
    if image.mode in _HIGH_DEPTH_MODES:
        image = _high_depth_to_l(image)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        background.alpha_composite(rgba)
        return background.convert("RGB")
    return image.convert("RGB")


def open_reference_image(path: str | Path) -> Image.Image:
    """Decode the first frame of an image file to an upright RGB Pillow image.

    EXIF orientation is applied (phones store portraits sideways); animated files give their
    first frame; every refusal is an `InputError` that says what to do.
    """
    path = Path(path)
    with _open(path) as image:
        try:
            image.seek(0)
            upright = ImageOps.exif_transpose(image)
            return _to_rgb(upright)
        except _DECODE_ERRORS as e:
            raise InputError(
                f"reference image {path} could not be decoded ({e}); the file is truncated or "
                f"corrupt, re-export it."
            ) from e


# --------------------------------------------------------------------------------------
# Fitting to the output size


def _crop_box(width: int, height: int, target_w: int, target_h: int) -> tuple[float, ...]:
    """Centred source box with the target's aspect ratio (fractional: no half-pixel shift)."""
    target_ratio = target_w / target_h
    if width / height > target_ratio:
        crop_w = height * target_ratio
        return ((width - crop_w) / 2, 0.0, (width + crop_w) / 2, float(height))
    crop_h = width / target_ratio
    return (0.0, (height - crop_h) / 2, float(width), (height + crop_h) / 2)


def _edge_colour(image: Image.Image, horizontal_bars: bool) -> tuple[int, int, int]:
    """Mean colour of the edges that will touch the padding bars."""
    pixels = np.asarray(image, dtype=np.float64)
    if horizontal_bars:  # bars above and below: top and bottom rows
        edges = np.concatenate([pixels[0], pixels[-1]])
    else:  # bars left and right: first and last columns
        edges = np.concatenate([pixels[:, 0], pixels[:, -1]])
    r, g, b = (int(round(c)) for c in edges.mean(axis=0))
    return r, g, b


def fit_image(image: Image.Image, size: tuple[int, int], fit: Fit = "crop") -> Image.Image:
    """Resize an RGB image to exactly `size` = (W, H) with LANCZOS.

    "crop": scale to cover the target and keep the centre (Wan's preprocessing; equivalent to
    resize-then-centre-crop, done as one resize of the centred source box). "pad": scale to fit
    inside and fill the bars with the mean colour of the adjoining edges, which reads as more
    background rather than a grey frame the model would try to animate.
    """
    target_w, target_h = size
    if target_w < 1 or target_h < 1:
        raise ValueError(f"target size {target_w}x{target_h} must be positive")
    width, height = image.size
    if fit == "crop":
        box = _crop_box(width, height, target_w, target_h)
        return image.resize((target_w, target_h), Image.Resampling.LANCZOS, box=box)
    if fit != "pad":
        raise ValueError(f"fit={fit!r}; allowed: 'crop', 'pad'")
    scale = min(target_w / width, target_h / height)
    new_w = min(target_w, max(1, round(width * scale)))
    new_h = min(target_h, max(1, round(height * scale)))
    resized = image.resize((new_w, new_h), Image.Resampling.LANCZOS)
    if (new_w, new_h) == (target_w, target_h):
        return resized
    colour = _edge_colour(resized, horizontal_bars=new_h < target_h)
    canvas = Image.new("RGB", (target_w, target_h), colour)
    canvas.paste(resized, ((target_w - new_w) // 2, (target_h - new_h) // 2))
    return canvas


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB uint8 image -> [3, H, W] float32 in [-1, 1] (x / 127.5 - 1, Wan's mapping)."""
    pixels = torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8))
    return (pixels.permute(2, 0, 1).float() / 127.5 - 1.0).contiguous()


def load_reference_image(
    path: str | Path, *, size: tuple[int, int], fit: Fit = "crop"
) -> torch.Tensor:
    """Load the reference image as a [3, H, W] float32 tensor in [-1, 1] of exactly `size`.

    `size` is (W, H), usually from `choose_size(*reference_image_size(path), ...)`.
    """
    if fit not in ("crop", "pad"):
        raise InputError(f"fit={fit!r} is not a fit mode; use 'crop' or 'pad'.")
    return image_to_tensor(fit_image(open_reference_image(path), size, fit))

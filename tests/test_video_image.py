"""Reference image: resolution parsing, output size rule, every image mode, fit geometry, errors."""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from streamavatar_cli.errors import InputError
from streamavatar_cli.video.image import (
    MIN_IMAGE_SIDE,
    check_resolution,
    choose_size,
    load_reference_image,
    parse_resolution,
    reference_image_size,
)

WAN_AREA = 704 * 1280
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def to_rgb255(tensor: torch.Tensor, y: int, x: int) -> np.ndarray:
    """Pixel (y, x) of a [3, H, W] tensor in [-1, 1] back in 0..255."""
    return ((tensor[:, y, x] + 1) * 127.5).numpy()


def close_to(pixel: np.ndarray, colour: tuple[int, int, int], tol: float = 12) -> bool:
    return bool(np.abs(pixel - np.array(colour)).max() <= tol)


# --------------------------------------------------------------------------------------
# Resolution


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1280x704", (1280, 704)),
        ("704*1280", (704, 1280)),
        (" 512 X 288 ", (512, 288)),
        ("512×512", (512, 512)),
        ("8192x32", (8192, 32)),
    ],
)
def test_parse_resolution_accepts(text, expected):
    assert parse_resolution(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "WIDTHxHEIGHT"),
        ("1280", "WIDTHxHEIGHT"),
        ("1280x", "WIDTHxHEIGHT"),
        ("x704", "WIDTHxHEIGHT"),
        ("1280x704x3", "WIDTHxHEIGHT"),
        ("12.5x10", "WIDTHxHEIGHT"),
        ("wide", "WIDTHxHEIGHT"),
        ("0x512", "positive"),
        ("512x0", "positive"),
        ("-512x512", "positive"),
        ("9000x512", "at most 8192"),
        ("512x8193", "at most 8192"),
    ],
)
def test_parse_resolution_refuses(text, message):
    with pytest.raises(InputError, match=message):
        parse_resolution(text)


def test_resolution_off_stride_names_nearest_valid_sizes():
    with pytest.raises(InputError, match=r"multiple of 32.*512x288, 480x288, 512x320"):
        parse_resolution("500x300", stride=32)
    with pytest.raises(InputError, match=r"nearest valid sizes: 32x32"):
        check_resolution(16, 20, 32)
    assert parse_resolution("512x288", stride=32) == (512, 288)
    check_resolution(1280, 704, 32)


# --------------------------------------------------------------------------------------
# Output size


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ((704, 1280), (704, 1280)),  # Wan's own sizes come out unchanged
        ((1280, 704), (1280, 704)),
        ((1920, 1080), (1248, 704)),  # 16:9: 1.773, within half a step
        ((1080, 1920), (704, 1248)),
        ((1000, 1000), (928, 928)),  # square stays square (Wan's rule gives 960x928)
    ],
)
def test_choose_size_known_cases(image, expected):
    assert choose_size(*image, stride=32, max_area=WAN_AREA) == expected


@pytest.mark.parametrize("stride", [16, 32])
@pytest.mark.parametrize("max_area", [256 * 256, 480 * 832, WAN_AREA])
@pytest.mark.parametrize(
    "image",
    [(640, 480), (480, 640), (333, 1000), (1000, 333), (3000, 400), (517, 519), (4032, 3024)],
)
def test_choose_size_keeps_aspect_area_and_stride(image, stride, max_area):
    w, h = choose_size(*image, stride=stride, max_area=max_area)
    ratio = image[0] / image[1]
    assert w % stride == 0 and h % stride == 0
    assert w * h <= max_area
    # One side is the nearest multiple of the stride to what the other side implies.
    assert min(abs(w - ratio * h), abs(h - w / ratio)) <= stride / 2 + 1e-9
    # And the pixel budget is used (the smallest case here, 416x128 of 256x256, is 81 %).
    assert w * h >= 0.8 * max_area


def test_choose_size_explicit_resolution_is_validated():
    assert choose_size(100, 100, stride=32, max_area=WAN_AREA, resolution=(512, 288)) == (512, 288)
    with pytest.raises(InputError, match="multiple of 32"):
        choose_size(100, 100, stride=32, max_area=WAN_AREA, resolution=(500, 288))
    with pytest.raises(ValueError, match="max_area"):
        choose_size(100, 100, stride=32, max_area=100)


# --------------------------------------------------------------------------------------
# Image modes


def _png_bytes(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG whose header claims width x height (for bomb tests: the data may be missing)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def make_rgba(path: Path) -> None:
    Image.new("RGBA", (80, 60), (255, 0, 0, 0)).save(path)  # fully transparent red


def make_la(path: Path) -> None:
    Image.new("LA", (80, 60), (0, 0)).save(path)


def make_palette(path: Path) -> None:
    Image.new("RGB", (80, 60), RED).convert("P", palette=Image.Palette.ADAPTIVE).save(path)


def make_palette_transparent(path: Path) -> None:
    image = Image.new("P", (80, 60), 0)
    image.putpalette([255, 0, 0] * 256)
    image.save(path, transparency=0)


def make_grey(path: Path) -> None:
    Image.new("L", (80, 60), 0).save(path)


def make_bilevel(path: Path) -> None:
    Image.new("1", (80, 60), 1).save(path)


def make_i16(path: Path) -> None:
    Image.fromarray(np.full((60, 80), 32768, np.uint16)).save(path)


def make_float(path: Path) -> None:
    Image.fromarray(np.full((60, 80), 0.5, np.float32)).save(path)


def make_cmyk_jpeg(path: Path) -> None:
    Image.new("CMYK", (80, 60), (0, 255, 255, 0)).save(path, quality=95)  # red in CMYK


def make_gif_animation(path: Path) -> None:
    frames = [Image.new("RGB", (80, 60), c).convert("P") for c in (RED, BLUE, GREEN)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=40, loop=0)


def make_webp(path: Path) -> None:
    Image.new("RGB", (80, 60), RED).save(path, lossless=True)


# (file name, writer, expected colour at the centre)
MODES = [
    ("rgba.png", make_rgba, (255, 255, 255)),  # transparency composited on white
    ("la.png", make_la, (255, 255, 255)),
    ("palette.png", make_palette, RED),
    ("palette_transparent.gif", make_palette_transparent, (255, 255, 255)),
    ("grey.png", make_grey, (0, 0, 0)),
    ("bilevel.png", make_bilevel, (255, 255, 255)),
    ("i16.png", make_i16, (128, 128, 128)),  # scaled from 16 bits, not clipped to white
    ("float.tif", make_float, (128, 128, 128)),
    ("cmyk.jpg", make_cmyk_jpeg, RED),
    ("animated.gif", make_gif_animation, RED),  # first frame
    ("lossless.webp", make_webp, RED),
]


@pytest.mark.parametrize(("name", "make", "colour"), MODES, ids=[m[0] for m in MODES])
def test_every_mode_loads_to_rgb_in_range(tmp_path, name, make, colour):
    path = tmp_path / name
    make(path)
    ref = load_reference_image(path, size=(64, 48))
    assert ref.shape == (3, 48, 64) and ref.dtype == torch.float32
    assert ref.min() >= -1 and ref.max() <= 1
    assert close_to(to_rgb255(ref, 24, 32), colour), to_rgb255(ref, 24, 32)


def test_half_transparent_pixels_blend_with_white(tmp_path):
    Image.new("RGBA", (64, 64), (0, 0, 0, 128)).save(tmp_path / "half.png")
    ref = load_reference_image(tmp_path / "half.png", size=(64, 64))
    assert close_to(to_rgb255(ref, 5, 5), (127, 127, 127), tol=2)


def test_exif_orientation_is_applied(tmp_path):
    # Stored landscape, left half red, right half blue; orientation 6 = rotate 90 degrees
    # clockwise to display, so the displayed image is portrait with red on top.
    pixels = np.zeros((32, 64, 3), np.uint8)
    pixels[:, :32] = RED
    pixels[:, 32:] = BLUE
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)

    assert reference_image_size(path) == (32, 64)
    ref = load_reference_image(path, size=(32, 64))
    assert ref.shape == (3, 64, 32)
    assert close_to(to_rgb255(ref, 8, 16), RED, tol=30)
    assert close_to(to_rgb255(ref, 56, 16), BLUE, tol=30)


# --------------------------------------------------------------------------------------
# Fit geometry


@pytest.fixture
def stripes(tmp_path) -> Path:
    """300x100: red, green and blue thirds."""
    pixels = np.zeros((100, 300, 3), np.uint8)
    pixels[:, :100], pixels[:, 100:200], pixels[:, 200:] = RED, GREEN, BLUE
    path = tmp_path / "stripes.png"
    Image.fromarray(pixels).save(path)
    return path


def test_crop_keeps_the_centre(stripes):
    ref = load_reference_image(stripes, size=(64, 64), fit="crop")
    assert ref.shape == (3, 64, 64)
    for y, x in [(0, 8), (32, 32), (63, 55)]:
        assert close_to(to_rgb255(ref, y, x), GREEN), (y, x)


def test_pad_keeps_everything_and_fills_with_edge_mean(stripes):
    ref = load_reference_image(stripes, size=(64, 64), fit="pad")
    assert ref.shape == (3, 64, 64)
    # 300x100 fits as 64x21, pasted at rows 21..41; bars above and below.
    assert close_to(to_rgb255(ref, 31, 3), RED)
    assert close_to(to_rgb255(ref, 31, 32), GREEN)
    assert close_to(to_rgb255(ref, 31, 60), BLUE)
    edge_mean = (85, 85, 85)  # mean of the top and bottom rows: a third of each colour
    for y in (0, 10, 50, 63):
        assert close_to(to_rgb255(ref, y, 32), edge_mean, tol=3), y


def test_pad_of_a_tall_image_adds_side_bars(tmp_path):
    Image.new("RGB", (40, 120), BLUE).save(tmp_path / "tall.png")
    ref = load_reference_image(tmp_path / "tall.png", size=(64, 48), fit="pad")
    assert ref.shape == (3, 48, 64)
    assert close_to(to_rgb255(ref, 24, 32), BLUE)
    assert close_to(to_rgb255(ref, 24, 1), BLUE)  # the bars take the edge colour


@pytest.mark.parametrize("fit", ["crop", "pad"])
@pytest.mark.parametrize("size", [(48, 32), (32, 96), (64, 64)])
def test_output_size_is_exact(tmp_path, fit, size):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (661, 997, 3), np.uint8)).save(tmp_path / "odd.png")
    ref = load_reference_image(tmp_path / "odd.png", size=size, fit=fit)
    assert ref.shape == (3, size[1], size[0])


# --------------------------------------------------------------------------------------
# Errors


def _truncated_png(path: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (200, 200, 3), np.uint8)).save(path, "PNG")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _truncated_jpeg(path: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (200, 200, 3), np.uint8)).save(path, "JPEG", quality=90)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


ERRORS = [
    ("missing", lambda p: None, "does not exist"),
    ("directory", lambda p: p.mkdir(), "is a directory"),
    ("empty", lambda p: p.write_bytes(b""), "empty"),
    ("text", lambda p: p.write_text("hello, not a picture"), "not an image"),
    ("truncated_png", _truncated_png, "truncated or corrupt"),
    ("truncated_jpeg", _truncated_jpeg, "truncated or corrupt"),
    ("tiny", lambda p: Image.new("RGB", (20, 500)).save(p, "PNG"), f"at least {MIN_IMAGE_SIDE}"),
    ("sliver", lambda p: Image.new("RGB", (20000, 100)).save(p, "PNG"), "aspect ratio of 200"),
    ("bomb_header", lambda p: p.write_bytes(_png_bytes(10_000, 10_000)), "megapixel limit"),
    ("bomb_pillow", lambda p: p.write_bytes(_png_bytes(30_000, 30_000)), "too large"),
]


@pytest.mark.parametrize(("name", "make", "message"), ERRORS, ids=[e[0] for e in ERRORS])
def test_bad_images_are_input_errors(tmp_path, name, make, message):
    path = tmp_path / name
    make(path)
    with pytest.raises(InputError, match=message) as info:
        load_reference_image(path, size=(64, 64))
    assert str(path) in str(info.value) and str(info.value).endswith(".")


@pytest.mark.parametrize("name", ["tiny", "sliver", "bomb_header", "bomb_pillow"])
def test_size_problems_are_found_from_the_header(tmp_path, name):
    make = {e[0]: e[1] for e in ERRORS}[name]
    make(tmp_path / name)
    with pytest.raises(InputError):
        reference_image_size(tmp_path / name)


def test_unknown_fit_mode(tmp_path):
    Image.new("RGB", (64, 64)).save(tmp_path / "ok.png")
    with pytest.raises(InputError, match="crop"):
        load_reference_image(tmp_path / "ok.png", size=(64, 64), fit="stretch")  # type: ignore[arg-type]


def test_values_map_to_minus_one_and_one(tmp_path):
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[:, 32:] = 255
    Image.fromarray(pixels).save(tmp_path / "bw.png")
    ref = load_reference_image(tmp_path / "bw.png", size=(64, 64))
    assert math.isclose(float(ref[:, :, :16].max()), -1.0)
    assert math.isclose(float(ref[:, :, 48:].min()), 1.0)

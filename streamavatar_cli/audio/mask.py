"""The speak/listen mask as segments: the `--mask FILE` format, and a readable timeline.

File format: a JSON list of [start_s, end_s, "talk" | "listen"] entries, times in seconds,
non-overlapping (touching is fine), in any order. Frames no entry covers are "listen", so a
file may list only the talk segments. Frame j belongs to a segment when its centre time
(j + 0.5) / 25 s lies in [start_s, end_s): segment edges round to the nearest frame
boundary, and a mask saved by `save_mask_file` loads back identically.
"""

from __future__ import annotations

import json
import math
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from streamavatar_cli.audio.frames import mask_runs
from streamavatar_cli.config import FPS
from streamavatar_cli.errors import InputError, OutputError, check_input_file

TALK = "talk"
LISTEN = "listen"
LABELS = (TALK, LISTEN)

Segment = tuple[float, float, str]
_MAKE_ONE = "`streamavatar mask AUDIO -o FILE`"


def mask_to_segments(mask: np.ndarray) -> list[Segment]:
    """Maximal runs of the mask as (start_s, end_s, label), covering the whole timeline."""
    return [(a / FPS, b / FPS, TALK if on else LISTEN) for a, b, on in mask_runs(mask)]


def segments_to_mask(segments: list[Segment], n_frames: int) -> np.ndarray:
    """int8 mask of `n_frames` frames: 1 where a frame's centre lies in a talk segment."""
    mask = np.zeros(n_frames, dtype=np.int8)
    for start, end, label in segments:
        if label != TALK:
            continue
        # start <= (j + 0.5) / FPS < end  <=>  ceil(start * FPS - 0.5) <= j < ceil(end * FPS - 0.5)
        first = max(0, math.ceil(start * FPS - 0.5))
        stop = min(n_frames, math.ceil(end * FPS - 0.5))
        mask[first:stop] = 1
    return mask


def _number(value: Any, what: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where}: {what} {value!r} is not a number of seconds")
    try:
        seconds = float(value)
    except OverflowError:  # an integer beyond float range (JSON allows any number of digits)
        raise InputError(f"{where}: {what} is too large to be a time in seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise InputError(f"{where}: {what} {value!r} must be a finite number >= 0")
    return seconds


def _parse_entry(entry: Any, index: int, source: str) -> Segment:
    where = f"{source}: entry {index}"
    if not isinstance(entry, list) or len(entry) != 3:
        raise InputError(
            f'{where} is {json.dumps(entry)}; each entry must be [start_s, end_s, "talk"|"listen"]'
        )
    start = _number(entry[0], "start", where)
    end = _number(entry[1], "end", where)
    if start >= end:
        raise InputError(f"{where}: start {start} s must be before end {end} s")
    if entry[2] not in LABELS:
        raise InputError(f'{where}: label {entry[2]!r} is unknown; allowed: "talk", "listen"')
    return start, end, entry[2]


def parse_mask_segments(data: Any, n_frames: int, source: str = "mask") -> list[Segment]:
    """Validate decoded JSON against the mask format; errors name the entry and the rule."""
    if not isinstance(data, list):
        raise InputError(
            f'{source}: expected a JSON list of [start_s, end_s, "talk"|"listen"] entries, '
            f"got a {type(data).__name__}"
        )
    segments = [_parse_entry(entry, i, source) for i, entry in enumerate(data)]
    order = sorted(range(len(segments)), key=lambda i: segments[i][0])
    for prev, nxt in pairwise(order):
        if segments[nxt][0] < segments[prev][1]:
            raise InputError(
                f"{source}: entries {prev} and {nxt} overlap ({segments[prev][1]} s > "
                f"{segments[nxt][0]} s); segments must not overlap"
            )
    duration = n_frames / FPS
    for i, (_, end, _) in enumerate(segments):
        if end > duration + 1.0 / FPS + 1e-9:
            raise InputError(
                f"{source}: entry {i} ends at {end} s, after the end of the audio "
                f"({duration:.2f} s); shorten it, or check the mask belongs to this audio"
            )
    return segments


def load_mask_file(path: str | Path, n_frames: int) -> np.ndarray:
    """Read a `--mask` JSON file into an int8 mask of `n_frames` frames (1 = talk)."""
    path = Path(path)
    check_input_file(path, "mask file", "a JSON file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(
            f"mask file {path} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
            f"fix it, or write one with {_MAKE_ONE}"
        ) from e
    except UnicodeDecodeError as e:
        raise InputError(
            f"mask file {path} is not UTF-8 text ({e.reason}); save it as UTF-8"
        ) from e
    except (ValueError, RecursionError) as e:  # a number of thousands of digits, deep nesting
        raise InputError(
            f"mask file {path} is not a mask ({type(e).__name__}); write one with {_MAKE_ONE}"
        ) from e
    except OSError as e:
        raise InputError(
            f"cannot read mask file {path} ({e.strerror}); check its permissions"
        ) from e
    return segments_to_mask(parse_mask_segments(data, n_frames, str(path)), n_frames)


def save_mask_file(path: str | Path, mask: np.ndarray) -> None:
    """Write every talk and listen segment of `mask`, one entry per line (readable diffs)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise OutputError(f"cannot write {path}: folder {path.parent} does not exist")
    lines = [
        json.dumps([round(a, 3), round(b, 3), label]) for a, b, label in mask_to_segments(mask)
    ]
    text = "[\n  " + ",\n  ".join(lines) + "\n]\n" if lines else "[]\n"
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e}") from e


def _bar(mask: np.ndarray, width: int) -> str:
    """One character per slice of the timeline: '#' where most frames talk, '.' otherwise."""
    n = len(mask)
    width = min(width, n)
    edges = np.linspace(0, n, width + 1).round().astype(int)
    return "".join("#" if mask[a:b].mean() >= 0.5 else "." for a, b in pairwise(edges))


def format_timeline(mask: np.ndarray, width: int = 60) -> str:
    """A readable timeline: one line per segment (times and label), a summary, a bar."""
    mask = np.asarray(mask).astype(bool)
    if mask.size == 0:
        return "(no frames)"
    lines = [f"{a:7.2f} s - {b:7.2f} s  {label}" for a, b, label in mask_to_segments(mask)]
    total = len(mask) / FPS
    talk = mask.sum() / FPS
    lines.append(
        f"talk {talk:.2f} s ({100 * talk / total:.0f} %), listen {total - talk:.2f} s, "
        f"{len(mask)} frames at {FPS} fps"
    )
    lines.append(f"|{_bar(mask, width)}|  0 .. {total:.2f} s  (# talk, . listen)")
    return "\n".join(lines)

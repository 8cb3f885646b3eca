"""Batch rendering from a manifest: one job per row, model loaded once, failures isolated.

A manifest is a CSV file with a header row or a JSON-lines file, with the columns `id`,
`image`, `agent_audio` (required) and `user_audio`, `mask`, `seed`, `resolution` (optional).
Relative paths are relative to the manifest's folder. Row `id` names the output
`<out_dir>/<id>.mp4`, so a rerun skips every job whose MP4 exists: with the writer's
temp-then-rename, an interrupted batch resumes where it stopped.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch

from streamavatar_cli.config import StreamConfig
from streamavatar_cli.errors import InputError, StreamAvatarError, check_input_file
from streamavatar_cli.pipeline.model import StreamAvatarModel
from streamavatar_cli.pipeline.render import Progress, RenderJob, render
from streamavatar_cli.video import parse_resolution

REQUIRED = ("id", "image", "agent_audio")
OPTIONAL = ("user_audio", "mask", "seed", "resolution")
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class BatchRow:
    line: int
    id: str
    image: Path
    agent_audio: Path
    user_audio: Path | None = None
    mask: Path | None = None
    seed: int | None = None
    resolution: tuple[int, int] | None = None


@dataclass
class BatchOutcome:
    id: str
    status: Literal["done", "skipped", "failed"]
    output: str
    seconds: float = 0.0  # of video rendered
    rtf: float | None = None
    error: str = ""


def read_manifest(path: str | Path) -> list[BatchRow]:
    """Parse and validate a .csv or .jsonl manifest; every problem names its line."""
    path = Path(path)
    check_input_file(path, "manifest", "a .csv or .jsonl file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"manifest {path} is not UTF-8 text ({e.reason}); save it as UTF-8") from e
    except OSError as e:
        raise InputError(
            f"cannot read manifest {path} ({e.strerror}); check its permissions"
        ) from e
    if path.suffix.lower() == ".csv":
        records = _csv_records(path, text)
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        records = _jsonl_records(path, text)
    else:
        raise InputError(f"manifest {path}: use a .csv or .jsonl file")
    rows = [_row(path, line, record) for line, record in records]
    if not rows:
        raise InputError(f"manifest {path} has no jobs")
    seen: dict[str, int] = {}
    for row in rows:
        if row.id in seen:
            raise InputError(
                f"manifest {path} line {row.line}: id {row.id!r} repeats line {seen[row.id]}"
            )
        seen[row.id] = row.line
    return rows


def _csv_records(path: Path, text: str) -> list[tuple[int, dict]]:
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames:
        raise InputError(
            f"manifest {path}: the first line must be a header ({', '.join(REQUIRED)}, ...)"
        )
    records = []
    for record in reader:
        if None in record:
            raise InputError(f"manifest {path} line {reader.line_num}: more fields than the header")
        if any(v is None for v in record.values()):
            raise InputError(
                f"manifest {path} line {reader.line_num}: fewer fields than the header"
            )
        if any(v.strip() for v in record.values()):
            records.append((reader.line_num, record))
    return records


def _jsonl_records(path: Path, text: str) -> list[tuple[int, dict]]:
    records = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as e:
            raise InputError(f"manifest {path} line {line}: not valid JSON ({e.msg})") from e
        except (ValueError, RecursionError) as e:  # thousands of digits, deep nesting
            raise InputError(
                f"manifest {path} line {line}: not a job ({type(e).__name__}); expected "
                '{"id": ..., "image": ..., "agent_audio": ...}'
            ) from e
        if not isinstance(record, dict):
            raise InputError(f"manifest {path} line {line}: expected a JSON object per line")
        records.append((line, record))
    return records


def _row(path: Path, line: int, record: dict) -> BatchRow:
    where = f"manifest {path} line {line}"
    unknown = sorted(set(record) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise InputError(
            f"{where}: unknown column(s) {unknown}; allowed: {list(REQUIRED + OPTIONAL)}"
        )
    values = {k: _text(record.get(k), where, k) for k in REQUIRED + OPTIONAL}
    for key in REQUIRED:
        if not values[key]:
            raise InputError(f"{where}: {key!r} is missing or empty")
    if not _SAFE_ID.fullmatch(values["id"]):
        raise InputError(
            f"{where}: id {values['id']!r} must be 1-128 letters, digits, '.', '_' or '-' "
            "(it names the output file)"
        )
    base = path.parent

    def file(key: str) -> Path | None:
        return (base / Path(values[key]).expanduser()) if values[key] else None

    return BatchRow(
        line=line, id=values["id"], image=file("image"), agent_audio=file("agent_audio"),
        user_audio=file("user_audio"), mask=file("mask"), seed=_seed(values["seed"], where),
        resolution=parse_resolution(values["resolution"]) if values["resolution"] else None,
    )  # fmt: skip


def _text(value: object, where: str, key: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(f"{where}: {key!r} must be text, got {json.dumps(value)}")
    return str(value).strip()


def _seed(value: str, where: str) -> int | None:
    if not value:
        return None
    try:
        seed = int(value)
    except ValueError:
        raise InputError(f"{where}: seed {value!r} is not an integer") from None
    if not 0 <= seed < 2**63:
        raise InputError(f"{where}: seed {seed} must be between 0 and 2^63 - 1")
    return seed


# ---- sharding -----------------------------------------------------------------------------


def parse_shard(text: str) -> tuple[int, int]:
    """ "i/n" (0-based i) -> (i, n)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match:
        raise InputError(f"--shard {text!r}: expected i/n, e.g. 0/4 for the first of 4 shards")
    if max(len(match[1]), len(match[2])) > 9:  # no cluster has a billion shards
        raise InputError(f"--shard {text[:40]!r}: the numbers are too large")
    index, count = int(match[1]), int(match[2])
    if count < 1 or not 0 <= index < count:
        raise InputError(f"--shard {text!r}: need 0 <= i < n (shards are numbered from 0)")
    return index, count


def shard_from_env() -> tuple[int, int] | None:
    """(RANK, WORLD_SIZE) under torchrun, else None."""
    rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    if rank is None or world is None:
        return None
    return parse_shard(f"{rank}/{world}")


def default_device() -> str | None:
    """Under torchrun on GPUs each process takes the GPU of its LOCAL_RANK."""
    local = os.environ.get("LOCAL_RANK")
    if local is not None and torch.cuda.is_available():
        return f"cuda:{int(local) % torch.cuda.device_count()}"
    return None


def take_shard(rows: list[BatchRow], shard: tuple[int, int] | None) -> list[BatchRow]:
    if shard is None:
        return rows
    index, count = shard
    return rows[index::count]


# ---- running ------------------------------------------------------------------------------


def run_batch(
    model: StreamAvatarModel,
    rows: list[BatchRow],
    out_dir: str | Path,
    *,
    stream: StreamConfig | None = None,
    template: RenderJob | None = None,
    force: bool = False,
    on_start: Callable[[BatchRow], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_done: Callable[[BatchOutcome], None] | None = None,
) -> list[BatchOutcome]:
    """Render every row with the one loaded model; a failing row is recorded, not fatal.

    `template` supplies the settings rows do not carry (fit, area, crf, features, ...).
    Ctrl-C stops at once: the current MP4 is not written, finished ones stay.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stream = stream or model.config.stream
    outcomes = []
    for row in rows:
        output = out_dir / f"{row.id}.mp4"
        if output.exists() and not force:
            outcome = BatchOutcome(row.id, "skipped", str(output), error="output exists")
        else:
            if on_start is not None:
                on_start(row)
            outcome = _run_row(model, row, output, stream, template, force, on_progress)
        outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)
    return outcomes


def _run_row(model, row, output, stream, template, force, on_progress) -> BatchOutcome:
    base = template or RenderJob(image=row.image, agent_audio=row.agent_audio, output=output)
    job = replace(
        base, image=row.image, agent_audio=row.agent_audio, user_audio=row.user_audio,
        mask=row.mask, output=output, overwrite=force,
        resolution=row.resolution or base.resolution,
    )  # fmt: skip
    try:
        row_stream = stream.replace(seed=row.seed) if row.seed is not None else stream
        result = render(model, job, row_stream, on_progress=on_progress)
    except (StreamAvatarError, ValueError, OSError) as e:
        return BatchOutcome(row.id, "failed", str(output), error=str(e))
    except Exception as e:  # noqa: BLE001 - one broken row must not cost the other rows
        return BatchOutcome(
            row.id, "failed", str(output), error=f"unexpected {type(e).__name__}: {e}"
        )
    return BatchOutcome(row.id, "done", str(output), result.seconds, result.rtf["total"])

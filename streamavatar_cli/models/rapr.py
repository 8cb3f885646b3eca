"""What a chunk sees, and at which temporal positions: the reference sink, the rolling window,
and Reference-Anchored Positional Re-encoding (RAPR). ARCHITECTURE section 4.

Latent frame 0 is the reference; chunk i >= 1 holds latent frames s_i .. s_i + C - 1 with
s_i = C (i - 1) + 1. These pure functions are the specification: the KV cache (`kv_cache.py`)
must reproduce them from its own state, and the tests check that it does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from streamavatar_cli.config import StreamConfig

log = logging.getLogger(__name__)


def chunk_start(index: int, chunk_frames: int) -> int:
    """Latent index s_i of the first frame of chunk `index` (1-based)."""
    if index < 1:
        raise ValueError(f"chunk index {index} must be >= 1 (chunk 0 is the reference)")
    return chunk_frames * (index - 1) + 1


@dataclass(frozen=True)
class ChunkContext:
    """Latent frames visible to the queries of one chunk, by region."""

    sink: tuple[int, ...]
    window: tuple[int, ...]
    current: tuple[int, ...]

    @property
    def frames(self) -> tuple[int, ...]:
        return self.sink + self.window + self.current


def chunk_context(index: int, cfg: StreamConfig) -> ChunkContext:
    """The sink frames (filled so far), the window (the latest `window_frames` frames that are
    not in the sink) and the chunk itself.

    Without a sink (`cfg.sink` off) nothing is pinned: the reference is an ordinary old frame and
    leaves the window like any other.
    """
    start = chunk_start(index, cfg.chunk_frames)
    n_sink = cfg.sink_frames
    sink = tuple(range(min(n_sink, start)))
    first_window = max(n_sink, start - cfg.window_frames)
    window = tuple(range(first_window, start))
    current = tuple(range(start, start + cfg.chunk_frames))
    return ChunkContext(sink, window, current)


def rope_positions(frames: Sequence[int], start: int, cfg: StreamConfig) -> list[int]:
    """Temporal RoPE index of each latent frame, as seen by the chunk starting at `start`.

    RAPR: the chunk sits at p = min(start, D); every non-sink frame k keeps its distance to the
    chunk (position p - (start - k)); sink frames keep their own index, so the reference is never
    farther than D from a query. Vanilla RoPE (`rapr` off): the true latent index.
    """
    if not cfg.rapr:
        return list(frames)
    anchor = min(start, cfg.rapr_max_distance)
    n_sink = cfg.sink_frames
    return [k if k < n_sink else anchor - (start - k) for k in frames]


def check_rapr(cfg: StreamConfig) -> str | None:
    """A warning when RAPR's cap makes window positions collide with the sink's."""
    if cfg.rapr and cfg.rapr_max_distance < cfg.sink_frames + cfg.window_frames:
        message = (
            f"rapr_max_distance={cfg.rapr_max_distance} is smaller than sink + window "
            f"({cfg.sink_frames} + {cfg.window_frames} frames): window positions will overlap the "
            f"sink's; use --max-distance >= {cfg.sink_frames + cfg.window_frames}"
        )
        log.warning(message)
        return message
    return None

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

import torch

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


def rope_positions(
    frames: Sequence[int], start: int, cfg: StreamConfig, offset: int = 0
) -> list[int]:
    """Temporal RoPE index of each latent frame, as seen by the chunk starting at `start`.

    RAPR: the chunk sits at p = min(start, D); every non-sink frame k keeps its distance to the
    chunk (position p - (start - k)); sink frames keep their own index, so the reference is never
    farther than D from a query. Vanilla RoPE (`rapr` off): the true latent index.
    `offset` (training only) places the non-sink frames as if the stream were `offset` latent
    frames further on, so short training clips see the positions of long streams.
    """
    n_sink = cfg.sink_frames
    if not cfg.rapr:
        return [k if k < n_sink else k + offset for k in frames]
    anchor = min(start + offset, cfg.rapr_max_distance)
    return [k if k < n_sink else anchor - (start - k) for k in frames]


def teacher_forcing_layout(
    n_chunks: int, cfg: StreamConfig, offset: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame mask and RoPE positions [F, F] of the student's training forward, F = 1 + 2 n C.

    Frames are [reference | context copy of every chunk | query copy of every chunk]. A chunk's
    query copy sees what its queries see when streaming: the context copies of its sink and
    window frames, and itself. A context copy sees the same context and itself: it is the
    forward that fills the cache at inference (the `noisy` update's last step). Streaming with
    the cache equals this one forward (tests/test_stream.py checks the same construction).
    """
    c = cfg.chunk_frames
    n = 1 + 2 * n_chunks * c
    mask = torch.zeros(n, n, dtype=torch.bool)
    positions = torch.zeros(n, n, dtype=torch.long)
    mask[0, 0] = True

    # latent frame k has its context copy in slot k (the reference is slot 0), its query copy
    # in slot k + n C
    for i in range(1, n_chunks + 1):
        start = chunk_start(i, c)
        context = chunk_context(i, cfg)
        seen = list(context.sink + context.window)
        pos = torch.tensor(rope_positions(seen + list(context.current), start, cfg, offset))
        for shift in (0, n_chunks * c):
            keys = seen + [f + shift for f in context.current]
            for q in context.current:
                mask[q + shift, keys] = True
                positions[q + shift, keys] = pos
    return mask, positions


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

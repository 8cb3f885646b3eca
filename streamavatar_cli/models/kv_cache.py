"""The streaming KV cache: a pinned sink and a rolling window, preallocated once per job.

Per layer the cache holds `sink_frames + window_frames` latent frames of self-attention K/V,
laid out as [sink slots | window ring slots]; frame k of the sink sits in slot k, a later frame
in ring slot sink + (k - sink) mod window, so writing a chunk evicts the oldest window frames.
Keys are stored un-rotated: RAPR re-encodes their positions for every chunk. The tensors are
allocated in `__init__` and only ever written in place, so memory does not depend on how long
the stream runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from streamavatar_cli.config import StreamConfig
from streamavatar_cli.models.attention import sdpa
from streamavatar_cli.models.rapr import rope_positions
from streamavatar_cli.models.rope import apply_rope, rope_cos_sin


class KVCache:
    def __init__(
        self,
        cfg: StreamConfig,
        *,
        n_layers: int,
        batch: int,
        n_heads: int,
        head_dim: int,
        tokens_per_frame: int,
        device: torch.device | str,
        dtype: torch.dtype,
    ):
        self.cfg = cfg
        self.tokens_per_frame = tokens_per_frame
        self.n_sink, self.n_window = cfg.sink_frames, cfg.window_frames
        n_tokens = (self.n_sink + self.n_window) * tokens_per_frame
        shape = (n_layers, batch, n_heads, n_tokens, head_dim)  # [layers, B, H, N, d]
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.frame_in_slot: list[int | None] = []
        self.reset()

    def reset(self) -> None:
        """Forget every stored frame (the tensors are kept and overwritten later)."""
        self.frame_in_slot = [None] * (self.n_sink + self.n_window)

    @property
    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() + self.v.numel() * self.v.element_size()

    def slot_of(self, frame: int) -> int | None:
        """Where latent frame `frame` is stored (None: kept nowhere, e.g. no window)."""
        if frame < self.n_sink:
            return frame
        if self.n_window == 0:
            return None
        return self.n_sink + (frame - self.n_sink) % self.n_window

    def visible(self, start: int) -> list[tuple[int, int]]:
        """(slot, frame) pairs the chunk starting at `start` attends to: the sink, then the
        window frames in time order."""
        stored = [(s, f) for s, f in enumerate(self.frame_in_slot) if f is not None and f < start]
        sink = [(s, f) for s, f in stored if s < self.n_sink]
        window = [(s, f) for s, f in stored if s >= self.n_sink and f >= start - self.n_window]
        return sink + sorted(window, key=lambda sf: sf[1])

    def write(self, layer: int, frames: Sequence[int], k: torch.Tensor, v: torch.Tensor) -> None:
        """Store the un-rotated k/v [B, H, len(frames) * T, d] of `frames` for one layer."""
        t = self.tokens_per_frame
        for i, frame in enumerate(frames):
            slot = self.slot_of(frame)
            if slot is not None:
                self.k[layer, :, :, slot * t : (slot + 1) * t] = k[:, :, i * t : (i + 1) * t]
                self.v[layer, :, :, slot * t : (slot + 1) * t] = v[:, :, i * t : (i + 1) * t]

    def commit(self, frames: Sequence[int]) -> None:
        """Record that `frames` were written (call once, after the forward that wrote them)."""
        for frame in frames:
            slot = self.slot_of(frame)
            if slot is not None:
                self.frame_in_slot[slot] = frame


class CachedAttention:
    """Self-attention of one chunk over [cached sink | cached window | the chunk itself].

    Positions come from RAPR (or vanilla RoPE) for this chunk and are computed once, then shared
    by every layer and denoising step. With `write` set, each layer stores the chunk's own K/V
    in the cache right after using them (the cache-update forward).
    """

    def __init__(
        self,
        cache: KVCache,
        frames: Sequence[int],
        *,
        height: int,
        width: int,
        head_dim: int,
        theta: float,
        write: bool = False,
    ):
        self.cache, self.frames, self.write = cache, list(frames), write
        start = self.frames[0]
        visible = cache.visible(start)
        self.key_frames = [f for _, f in visible] + self.frames
        self.key_positions = rope_positions(self.key_frames, start, cache.cfg)
        device = cache.k.device
        n_current = len(self.frames)
        self.k_rope = rope_cos_sin(self.key_positions, height, width, head_dim, theta, device)
        self.q_rope = rope_cos_sin(
            self.key_positions[-n_current:], height, width, head_dim, theta, device
        )
        self.slices = _token_slices([s for s, _ in visible], cache.tokens_per_frame)

    def __call__(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        keys = torch.cat([self.cache.k[layer, :, :, sl] for sl in self.slices] + [k], dim=2)
        values = torch.cat([self.cache.v[layer, :, :, sl] for sl in self.slices] + [v], dim=2)
        out = sdpa(apply_rope(q, *self.q_rope), apply_rope(keys, *self.k_rope), values)
        if self.write:
            self.cache.write(layer, self.frames, k, v)
        return out


def _token_slices(slots: list[int], tokens_per_frame: int) -> list[slice]:
    """Token ranges of the given cache slots, merging runs of consecutive slots."""
    slices: list[slice] = []
    for slot in slots:
        lo, hi = slot * tokens_per_frame, (slot + 1) * tokens_per_frame
        if slices and slices[-1].stop == lo:
            slices[-1] = slice(slices[-1].start, hi)
        else:
            slices.append(slice(lo, hi))
    return slices

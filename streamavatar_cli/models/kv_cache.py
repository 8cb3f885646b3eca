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
        self._rope_key: tuple | None = None
        self._rope: tuple[torch.Tensor, torch.Tensor] | None = None

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
                # detached: a chunk's gradient never flows into later chunks through the cache
                self.k[layer, :, :, slot * t : (slot + 1) * t] = k[
                    :, :, i * t : (i + 1) * t
                ].detach()
                self.v[layer, :, :, slot * t : (slot + 1) * t] = v[
                    :, :, i * t : (i + 1) * t
                ].detach()

    def commit(self, frames: Sequence[int]) -> None:
        """Record that `frames` were written (call once, after the forward that wrote them)."""
        for frame in frames:
            slot = self.slot_of(frame)
            if slot is not None:
                self.frame_in_slot[slot] = frame

    def rope_tables(
        self, positions: list[int], height: int, width: int, head_dim: int, theta: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin for keys at `positions`, rebuilt only when the positions change: with RAPR
        they stop changing from the fifth chunk on, so a long stream builds no more tables
        (and, on a GPU, copies no more positions to the device)."""
        key = (tuple(positions), height, width, head_dim, theta)
        if self._rope_key != key:
            self._rope = rope_cos_sin(positions, height, width, head_dim, theta, self.k.device)
            self._rope_key = key
        return self._rope


class CachedAttention:
    """Self-attention of one chunk over [cached sink | cached window | the chunk itself].

    Positions come from RAPR (or vanilla RoPE) for this chunk and are shared by every layer and
    denoising step. The cached keys do not change within a chunk either, so each layer rotates
    them once, at the chunk's first step, and the later steps reuse them: per step only the
    chunk's own queries and keys are rotated. With `write` set, each layer stores the chunk's
    own un-rotated K/V in the cache right after using them (the cache-update forward).
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
        self.k_rope = cache.rope_tables(self.key_positions, height, width, head_dim, theta)
        self.n_cached = len(visible) * cache.tokens_per_frame  # tokens before the chunk's own
        self.q_rope = tuple(t[self.n_cached :] for t in self.k_rope)  # the chunk's queries and keys
        self.slices = _token_slices([s for s, _ in visible], cache.tokens_per_frame)
        self._rotated: dict[int, torch.Tensor] = {}  # layer -> rotated cached keys

    def __call__(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        keys = torch.cat([self._cached_keys(layer, k), apply_rope(k, *self.q_rope)], dim=2)
        values = torch.cat([self.cache.v[layer, :, :, sl] for sl in self.slices] + [v], dim=2)
        out = sdpa(apply_rope(q, *self.q_rope), keys, values)
        if self.write:
            self.cache.write(layer, self.frames, k, v)
        return out

    def _cached_keys(self, layer: int, like: torch.Tensor) -> torch.Tensor:
        """The layer's visible cached keys, rotated: [B, H, cached tokens, d] (a copy, so the
        cache write of the chunk's last step cannot change it)."""
        if layer not in self._rotated:
            parts = [self.cache.k[layer, :, :, sl] for sl in self.slices]
            keys = torch.cat(parts, dim=2) if parts else like[:, :, :0]
            cos, sin = (t[: self.n_cached] for t in self.k_rope)
            self._rotated[layer] = apply_rope(keys, cos, sin)
        return self._rotated[layer]


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

"""How the DiT's self-attention sees the sequence: strategies passed into `WanDiT.forward`.

A block computes q, k, v (RMS-normed, not yet rotated) and hands them to an attention strategy
`attn(layer, q, k, v) -> out`, all [B, heads, L, head_dim]. Everything else in a block is
frame-local, so the strategy alone decides what "bidirectional", "block-causal with a sink and a
window" or "streaming with a KV cache" means:

- `GlobalAttention`: every token sees every token; the Wan2.2 forward.
- `FrameMaskAttention`: an explicit frame-level mask plus the RoPE position every key frame has
  as seen from every query frame. The reference form of the streaming generator (RAPR gives the
  sink different relative positions for different query chunks, so one position per key is not
  enough) and the training forward.
- `CachedAttention` (in `kv_cache.py`): the streaming form over a rolling KV cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F

from streamavatar_cli.models.rope import apply_rope, rope_cos_sin


class Attention(Protocol):
    def __call__(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor: ...


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention, scale 1/sqrt(head_dim); fused kernels where the device has them."""
    return F.scaled_dot_product_attention(q, k, v)


class GlobalAttention:
    """Full bidirectional attention with one temporal position per latent frame."""

    def __init__(self, cos: torch.Tensor, sin: torch.Tensor):
        self.cos, self.sin = cos, sin

    @classmethod
    def for_grid(
        cls,
        frame_positions: Sequence[int] | torch.Tensor,
        height: int,
        width: int,
        head_dim: int,
        theta: float,
        device: torch.device | str,
    ) -> GlobalAttention:
        return cls(*rope_cos_sin(frame_positions, height, width, head_dim, theta, device))

    def __call__(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        return sdpa(apply_rope(q, self.cos, self.sin), apply_rope(k, self.cos, self.sin), v)


class FrameMaskAttention:
    """Attention under an explicit frame mask with per-query-frame key positions.

    `mask[i, j]`: query frame i may attend to key frame j. `key_positions[i, j]`: the temporal
    RoPE index of key frame j as seen from query frame i; frame i's own queries sit at
    `key_positions[i, i]`. Query frames that share a mask row and a position row form one group
    and one SDPA call, so a chunk of 3 frames costs one call, not three.
    """

    def __init__(
        self,
        mask: torch.Tensor,
        key_positions: torch.Tensor,
        height: int,
        width: int,
        head_dim: int,
        theta: float,
        device: torch.device | str,
    ):
        n = mask.shape[0]
        if mask.shape != (n, n) or key_positions.shape != (n, n):
            raise ValueError(
                f"mask {tuple(mask.shape)} and positions {tuple(key_positions.shape)} must be [F, F]"
            )
        if not bool(mask.diagonal().all()):
            raise ValueError("every frame must attend to itself (mask diagonal must be True)")
        tokens = height * width
        rows: dict[tuple, list[int]] = {}
        for i in range(n):
            key = (tuple(mask[i].tolist()), tuple(key_positions[i].tolist()))
            rows.setdefault(key, []).append(i)
        self.groups = []
        for (mask_row, pos_row), query_frames in rows.items():
            key_frames = [j for j, seen in enumerate(mask_row) if seen]
            q_cos, q_sin = rope_cos_sin(
                [pos_row[i] for i in query_frames], height, width, head_dim, theta, device
            )
            k_cos, k_sin = rope_cos_sin(
                [pos_row[j] for j in key_frames], height, width, head_dim, theta, device
            )
            self.groups.append(
                (
                    _token_index(query_frames, tokens, device),
                    _token_index(key_frames, tokens, device),
                    (q_cos, q_sin),
                    (k_cos, k_sin),
                )
            )

    def __call__(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        out = torch.empty_like(q)
        for q_idx, k_idx, q_rope, k_rope in self.groups:
            qg = apply_rope(q.index_select(2, q_idx), *q_rope)
            kg = apply_rope(k.index_select(2, k_idx), *k_rope)
            out.index_copy_(2, q_idx, sdpa(qg, kg, v.index_select(2, k_idx)))
        return out


def _token_index(
    frames: list[int], tokens_per_frame: int, device: torch.device | str
) -> torch.Tensor:
    """Token indices of the given frames in a (f, h, w)-ordered sequence."""
    base = torch.arange(tokens_per_frame, device=device)
    return torch.cat([base + f * tokens_per_frame for f in frames])

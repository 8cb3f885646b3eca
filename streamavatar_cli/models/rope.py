"""3-D rotary position embedding of Wan2.2, with positions computed on the fly.

The head dimension d is split into a temporal, a height and a width part: h = w = 2 * (d // 6)
channels, t = d - 2h (44/42/42 for d = 128). Channel pairs are adjacent (2i, 2i+1) and ordered
t-pairs, h-pairs, w-pairs. The official code precomputes 1024 positions per axis; here angles
are computed from the positions we are given, so a stream can run past frame 1024 and RAPR can
hand out any temporal positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Channels of the (t, h, w) parts of one attention head."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def _axis_angles(positions: torch.Tensor, axis_dim: int, theta: float) -> torch.Tensor:
    """[N] positions -> [N, axis_dim / 2] rotation angles, in float64 like the official code."""
    exponents = torch.arange(0, axis_dim, 2, dtype=torch.float64, device=positions.device)
    inv_freq = theta ** (-exponents / axis_dim)
    return positions.to(torch.float64)[:, None] * inv_freq[None, :]


def rope_cos_sin(
    frame_positions: Sequence[int] | torch.Tensor,
    height: int,
    width: int,
    head_dim: int,
    theta: float = 10000.0,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, each [F * height * width, head_dim / 2] float32, for tokens in (f, h, w) order.

    `frame_positions` gives the temporal RoPE index of each of the F latent frames (RAPR re-encodes
    them per chunk); height/width positions are the token's row and column on the patch grid.
    """
    t_dim, h_dim, w_dim = rope_split(head_dim)
    f_pos = torch.as_tensor(frame_positions, device=device)
    n_frames = f_pos.numel()
    angles_t = _axis_angles(f_pos, t_dim, theta)  # [F, t/2]
    angles_h = _axis_angles(torch.arange(height, device=device), h_dim, theta)  # [h, h_dim/2]
    angles_w = _axis_angles(torch.arange(width, device=device), w_dim, theta)  # [w, w_dim/2]
    grid = (n_frames, height, width)
    angles = torch.cat(
        [
            angles_t[:, None, None, :].expand(*grid, -1),
            angles_h[None, :, None, :].expand(*grid, -1),
            angles_w[None, None, :, :].expand(*grid, -1),
        ],
        dim=-1,
    ).reshape(n_frames * height * width, head_dim // 2)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs of x [B, heads, L, d] by the angles of cos/sin [L, d/2].

    Computed in float32 whatever x's dtype, returned in x's dtype. The pair (a, b) is the
    complex number a + ib and its rotation one complex product, as in the official code: one
    kernel where a real even/odd split takes six (10x slower on a CPU).
    """
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))  # [B, H, L, d/2]
    return torch.view_as_real(pairs * torch.complex(cos, sin)).flatten(-2).type_as(x)

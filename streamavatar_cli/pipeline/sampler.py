"""The few-step flow-matching sampler (ARCHITECTURE section 4).

Flow matching: x_sigma = (1 - sigma) x0 + sigma noise, and the DiT predicts v = noise - x0, so
x0 = x_sigma - sigma v. A few-step sampler predicts x0 at each of its noise levels and re-noises
it with fresh noise to the next level. The DiT takes timesteps t = 1000 sigma.
"""

from __future__ import annotations

import torch

TIMESTEP_SCALE = 1000.0


def timestep(sigma: float) -> float:
    """DiT timestep of a noise level (continuous, in [0, 1000])."""
    return TIMESTEP_SCALE * sigma


def predict_x0(x: torch.Tensor, v: torch.Tensor, sigma: float) -> torch.Tensor:
    return x - sigma * v


def renoise(x0: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
    return (1.0 - sigma) * x0 + sigma * noise


class NoiseSource:
    """Seeded Gaussian noise, drawn on the CPU so a seed gives the same video on any device;
    the caller moves it (the streaming generator does so without stalling a GPU)."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator)

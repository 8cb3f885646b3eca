"""audio_proj / listen_proj: per latent frame, a window of audio features -> a few audio tokens.

Input per latent frame: `audio_window` (8) per-video-frame feature vectors (the latent's 4
frames, 2 before, 2 after) x `audio_feature_layers` x `audio_feature_dim`. The window is
flattened and mapped by an MLP to `audio_tokens` tokens of width `audio_context_dim`, which the
frame-local audio attention of every block reads.
"""

from __future__ import annotations

import torch
from torch import nn

from streamavatar_cli.config import DiTConfig


class AudioProjection(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        n_in = cfg.audio_window * cfg.audio_feature_layers * cfg.audio_feature_dim
        self.proj1 = nn.Linear(n_in, cfg.audio_hidden_dim)
        self.proj2 = nn.Linear(cfg.audio_hidden_dim, cfg.audio_hidden_dim)
        self.proj3 = nn.Linear(cfg.audio_hidden_dim, cfg.audio_tokens * cfg.audio_context_dim)
        self.norm = nn.LayerNorm(cfg.audio_context_dim, eps=cfg.eps)
        self.act = nn.SiLU()

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """[B, Fa, window, layers, dim] -> [B, Fa, audio_tokens, audio_context_dim]."""
        cfg = self.cfg
        expected = (cfg.audio_window, cfg.audio_feature_layers, cfg.audio_feature_dim)
        if windows.ndim != 5 or tuple(windows.shape[2:]) != expected:
            raise ValueError(
                f"audio windows {tuple(windows.shape)} must be [B, frames, {', '.join(map(str, expected))}]"
            )
        x = windows.flatten(2).to(self.proj1.weight.dtype)
        x = self.proj3(self.act(self.proj2(self.act(self.proj1(x)))))
        return self.norm(x.unflatten(-1, (cfg.audio_tokens, cfg.audio_context_dim)))

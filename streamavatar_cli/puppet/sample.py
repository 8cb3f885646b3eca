"""Training samples: a seed -> identity, conversation, behaviour and rendered frames.

Seed streams (reproducible across processes, disjoint across workers): worker `i` of `n`
draws clip seeds `seed * 1_000_003 + i + k * n` for k = 0, 1, 2, ... Each clip seed fixes
everything in the clip, so any clip can be regenerated alone from its seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from streamavatar_cli.puppet.behaviour import behaviour
from streamavatar_cli.puppet.conversation import synth_conversation
from streamavatar_cli.puppet.identity import Identity, identity_from_seed
from streamavatar_cli.puppet.render import Size, render_frames, render_reference
from streamavatar_cli.puppet.state import PuppetState

DOMAIN_VERSION = 2
"""Bumped whenever a seed's clip changes (2: the listener nods along with the user); latent
caches record it, so a cache of older clips is rebuilt rather than trained on."""

SEED_STRIDE = 1_000_003
"""Clip seeds of different base seeds do not collide for fewer than a million clips per worker set."""


@dataclass
class PuppetClip:
    """One training sample; frames [n, H, W, 3] uint8, audio float32 16 kHz, mask int8 [n]."""

    seed: int
    identity: Identity
    reference: np.ndarray
    frames: np.ndarray
    agent: np.ndarray
    user: np.ndarray
    mask: np.ndarray
    state: PuppetState
    espeak: bool = False


def sample_clip(
    seed: int, seconds: float = 4.0, size: Size = (256, 256), *, espeak: bool | None = None
) -> PuppetClip:
    """The clip of `seed`: same seed, same clip (frames, audio, mask and state), bit for bit."""
    identity = identity_from_seed(seed)
    conv = synth_conversation(seed, seconds, espeak=espeak)
    state = behaviour(conv.agent, conv.user, conv.mask, seed)
    return PuppetClip(
        seed=int(seed),
        identity=identity,
        reference=render_reference(identity, size),
        frames=render_frames(identity, state, size),
        agent=conv.agent,
        user=conv.user,
        mask=conv.mask,
        state=state,
        espeak=conv.espeak,
    )


def clip_seed(seed: int, k: int, worker: int = 0, n_workers: int = 1) -> int:
    """The k-th clip seed of `worker` (of `n_workers`) under base `seed`."""
    return int(seed) * SEED_STRIDE + worker + k * n_workers


def iter_samples(
    seed: int,
    *,
    worker: int = 0,
    n_workers: int = 1,
    seconds: float = 4.0,
    size: Size = (256, 256),
    espeak: bool | None = None,
) -> Iterator[PuppetClip]:
    """Endless clips of one worker's seed stream (see the module docstring)."""
    if n_workers < 1 or not 0 <= worker < n_workers:
        raise ValueError(f"worker={worker} must be in 0..n_workers-1 (n_workers={n_workers})")
    k = 0
    while True:
        yield sample_clip(clip_seed(seed, k, worker, n_workers), seconds, size, espeak=espeak)
        k += 1

"""From two audio tracks and the talk/listen mask to a puppet's per-frame motion.

Works on any recording, not only synthetic speech: levels are measured relative to each
track's own loud frames (`speech_envelope`), so gain does not matter. Talking: the mouth
follows the agent's envelope (a per-seed lag of 0-2 frames, attack/release jaw smoothing),
head bobs and gestures fire on energy onsets. Listening: mouth closed with a slight smile,
nods along with the user's syllable onsets and at the user's phrase ends, brow raises on the
user's emphasis, more gaze shifts, less and slower sway (the listener's head motion is mostly
the user's doing). Blinks in both. Talk and listen parts are cross-faded over `TRANSITION_S`.
"""

from __future__ import annotations

import numpy as np

from streamavatar_cli.audio.frames import frame_rms
from streamavatar_cli.config import FPS
from streamavatar_cli.puppet.state import PuppetState

TRANSITION_S = 0.24
"""Cross-fade between talking and listening behaviour at a turn change."""

ENVELOPE_RANGE_DB = 30.0
"""The envelope maps [loud - 30 dB, loud] to [0, 1]; `loud` is the 95th percentile frame."""


def speech_envelope(wave: np.ndarray | None, n_frames: int) -> np.ndarray:
    """Per-frame loudness in [0, 1] on the 25 fps grid, relative to the track's loud frames.

    Shared with `metrics.lip_sync`, so ground truth and estimate use one definition.
    """
    if wave is None:
        return np.zeros(n_frames, np.float32)
    rms = frame_rms(np.asarray(wave, np.float64), n_frames)
    db = 20 * np.log10(rms + 1e-5)
    if not np.any(rms > 1e-4):
        return np.zeros(n_frames, np.float32)
    loud = np.percentile(db[rms > 1e-4], 95)
    return np.clip((db - (loud - ENVELOPE_RANGE_DB)) / ENVELOPE_RANGE_DB, 0, 1).astype(np.float32)


def _closing_fade(on: np.ndarray, frames: int) -> np.ndarray:
    """1 inside talk runs, ramping to 0 over their last `frames` frames: the mouth closes
    before the listen part starts (so it is closed on every listen frame), while speech
    onsets still open it at once."""
    left = np.zeros(len(on), np.float32)
    run = 0
    for j in range(len(on) - 1, -1, -1):
        run = run + 1 if on[j] else 0
        left[j] = run
    return np.clip((left - 1) / frames, 0, 1) * on


def _one_pole(x: np.ndarray, attack: float, release: float) -> np.ndarray:
    """Follower that rises with coefficient `attack` and falls with `release` (jaw inertia)."""
    y = np.empty_like(x)
    prev = 0.0
    for i, v in enumerate(x):
        a = attack if v > prev else release
        prev = prev + a * (v - prev)
        y[i] = prev
    return y


def _smooth(x: np.ndarray, seconds: float) -> np.ndarray:
    """Zero-phase Hann smoothing (for slow channels and cross-fades)."""
    n = max(1, int(round(seconds * FPS)))
    if n < 2 or len(x) == 0:
        return x.astype(np.float32)
    k = np.hanning(n + 2)[1:-1]
    k /= k.sum()
    pad = np.pad(x.astype(np.float64), (n, n), mode="edge")
    return np.convolve(pad, k, mode="same")[n:-n].astype(np.float32)


def _impulses_to_motion(times: np.ndarray, n: int, shape: np.ndarray) -> np.ndarray:
    """Place `shape` at each event frame (sum), the way a nod or a bob unfolds over frames."""
    out = np.zeros(n + len(shape), np.float32)
    for t in times:
        out[t : t + len(shape)] += shape
    return out[:n]


def _onsets(
    env: np.ndarray, gate: np.ndarray, rng: np.random.Generator, min_gap: int
) -> np.ndarray:
    """Frames where the envelope jumps up (syllable onsets / emphasis), at least min_gap apart."""
    rise = np.diff(_smooth(env, 0.12), prepend=0.0) * gate
    candidates = np.nonzero(rise > 0.04)[0]
    picked: list[int] = []
    for c in candidates:
        if not picked or c - picked[-1] >= min_gap:
            if rng.random() < 0.7:
                picked.append(int(c))
    return np.asarray(picked, dtype=int)


def _phrase_ends(env: np.ndarray, gate: np.ndarray) -> np.ndarray:
    """Frames where the user stops after speaking >= 0.6 s and pauses >= 0.2 s."""
    voiced = _smooth(env, 0.2) > 0.25
    ends = []
    run = 0
    for j in range(1, len(voiced)):
        run = run + 1 if voiced[j - 1] else 0
        if voiced[j - 1] and not voiced[j] and run >= 0.6 * FPS:
            if not voiced[j : j + int(0.2 * FPS)].any() and gate[j] > 0.5:
                ends.append(j)
    return np.asarray(ends, dtype=int)


def _sway(
    rng: np.random.Generator, n: int, period_s: tuple[float, float], amp: float
) -> np.ndarray:
    """Sum of three slow sinusoids: idle motion that never repeats exactly."""
    t = np.arange(n) / FPS
    out = np.zeros(n, np.float64)
    for _ in range(3):
        period = rng.uniform(*period_s)
        out += np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi)) / 3
    return (amp * out).astype(np.float32)


def _blinks(rng: np.random.Generator, n: int) -> np.ndarray:
    out = np.zeros(n, np.float32)
    shape = np.array([0.5, 1.0, 1.0, 0.6, 0.2], np.float32)
    j = int(rng.uniform(0.5, 3.0) * FPS)
    while j < n:
        out[j : j + len(shape)] = shape[: n - j]
        j += int(rng.uniform(2.0, 5.5) * FPS)
    return out


def _targets(
    rng: np.random.Generator, n: int, events: np.ndarray, spread: float, hold_s: float
) -> np.ndarray:
    """Piecewise-constant random targets switching at `events`, returning to 0 after hold_s."""
    out = np.zeros(n, np.float32)
    for e in events:
        out[e : e + int(hold_s * FPS)] = rng.uniform(-spread, spread)
    return out


def _hands(
    rng: np.random.Generator, n: int, talk: np.ndarray, onsets: np.ndarray
) -> list[np.ndarray]:
    """Gestures: each hand moves to a new pose on some talking onsets; rest while listening."""
    channels = []
    for _ in range(2):
        picks = onsets[rng.random(len(onsets)) < 0.45]
        x = _targets(rng, n, picks, 0.9, 0.8)
        y = np.abs(_targets(rng, n, picks, 1.0, 0.8)) * (0.4 + 0.6 * rng.random())
        channels += [_smooth(x * talk, 0.3), _smooth(y * talk, 0.3)]
    channels = [c + _sway(rng, n, (4.0, 9.0), 0.06) for c in channels]
    return channels


def behaviour(
    agent: np.ndarray, user: np.ndarray | None, mask: np.ndarray, seed: int
) -> PuppetState:
    """Per-frame state for `len(mask)` frames; frame j shows time j / 25 s."""
    mask = np.asarray(mask).astype(np.float32).reshape(-1)
    n = len(mask)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 7])
    talk = np.clip(_smooth(mask, TRANSITION_S), 0, 1)
    listen = 1 - talk
    env_a = speech_envelope(agent, n)
    env_u = speech_envelope(user, n)

    lag = int(rng.integers(0, 3))
    driven = np.concatenate([np.zeros(lag, np.float32), env_a[: n - lag]]) if lag else env_a
    inside = _closing_fade(mask > 0, frames=2)
    mouth = _one_pole(np.clip(driven, 0, 1) * inside, 1.0, 0.75) * inside
    jaw = _one_pole(mouth, 0.4, 0.25)
    width = _smooth(rng.uniform(-1, 1, n).astype(np.float32), 0.25) * 0.7 * talk

    bob_shape = np.sin(np.linspace(0, np.pi, 8)).astype(np.float32)
    onsets = _onsets(env_a, mask, rng, min_gap=int(0.35 * FPS))
    bobs = _impulses_to_motion(onsets, n, bob_shape * 0.5)
    nod_shape = np.concatenate(
        [np.sin(np.linspace(0, np.pi, 10)), 0.5 * np.sin(np.linspace(0, np.pi, 8))]
    )
    ends = _phrase_ends(env_u, listen)
    # Nodding along: a nod starts on the user's syllable onsets, so the audio window of the
    # latent that shows it holds its cause (a phrase-end nod needs 0.6 s of memory).
    along = _onsets(env_u, listen, rng, min_gap=int(0.5 * FPS))
    nods = _impulses_to_motion(ends, n, nod_shape.astype(np.float32) * 0.9)
    nods += _impulses_to_motion(along, n, bob_shape * 0.7)
    emphasis = _onsets(env_u, listen * (env_u > 0.75), rng, min_gap=int(1.0 * FPS))
    brow_raise = _impulses_to_motion(
        emphasis, n, np.sin(np.linspace(0, np.pi, 14)).astype(np.float32) * 0.9
    )
    brow_talk = _impulses_to_motion(
        onsets[rng.random(len(onsets)) < 0.3],
        n,
        np.sin(np.linspace(0, np.pi, 10)).astype(np.float32) * 0.6,
    )

    gaze_events_l = np.nonzero(rng.random(n) < 0.6 / FPS)[0]
    gaze_events_t = np.nonzero(rng.random(n) < 0.3 / FPS)[0]
    gaze_x = _smooth(
        _targets(rng, n, gaze_events_l, 0.8, 1.2) * listen
        + _targets(rng, n, gaze_events_t, 0.6, 1.0) * talk,
        0.12,
    )
    gaze_y = _smooth(_targets(rng, n, gaze_events_l, 0.4, 1.2) * listen, 0.12)

    hands = _hands(rng, n, talk, onsets)
    return PuppetState(
        mouth_open=mouth,
        mouth_width=width,
        smile=_smooth(listen * (0.25 + 0.5 * (nods > 0.3)), 0.4) * rng.uniform(0.5, 1.0),
        jaw=jaw,
        yaw=_sway(rng, n, (3.0, 7.0), 0.35) * talk + _sway(rng, n, (6.0, 12.0), 0.12) * listen,
        pitch=np.clip(
            bobs * talk + nods * listen + _sway(rng, n, (4.0, 9.0), 0.12 - 0.06 * listen), -1, 1
        ),
        roll=_sway(rng, n, (3.0, 8.0), 0.3) * talk + _sway(rng, n, (6.0, 14.0), 0.12) * listen,
        blink=_blinks(rng, n),
        gaze_x=gaze_x,
        gaze_y=gaze_y,
        brow=np.clip(brow_talk * talk + brow_raise * listen, 0, 1),
        shoulder=_sway(rng, n, (3.5, 5.0), 0.35 - 0.2 * listen)
        + 0.4 * _smooth(hands[1] * talk, 0.3),
        hand_l_x=hands[0],
        hand_l_y=hands[1],
        hand_r_x=hands[2],
        hand_r_y=hands[3],
    )

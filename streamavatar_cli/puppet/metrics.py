"""Scores of any puppet video from its pixels: lip-sync, listening motion, identity drift.

The estimators never see the state: they take frames and the reference image (the neutral
frame), and the renderer's fixed layout (where the head, mouth and hands are on the canvas).
They are made for blurry model renders too: colour *similarity* (soft masks, Gaussian in RGB
distance) instead of thresholds, mass-weighted statistics instead of edges, and phase
correlation (which uses the whole head silhouette) for head motion.

mouth_openings(frames, ref)  -> [n] in state units (0 closed .. 1 fully open)
head_offsets(frames, ref)    -> [n, 2] face displacement from the reference, canvas units
hand_offsets(frames, ref)    -> [n, 4] hand displacements from the reference, canvas units
appearance_distances(frames, ref) -> [n] in [0, 1], colour-histogram distance
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamavatar_cli.config import FPS, VAE_TEMPORAL_STRIDE
from streamavatar_cli.puppet.behaviour import speech_envelope
from streamavatar_cli.puppet.identity import MOUTH_INTERIOR
from streamavatar_cli.puppet.render import HAND_REST_X, HAND_REST_Y, MOUTH_OPEN_UNITS
from streamavatar_cli.puppet.scene import HEAD_CENTRE

MOUTH_SIGMA = 30.0  # RGB distance at which a pixel counts ~0.6 as mouth interior
SKIN_SIGMA = 20.0
ELLIPSE_MEAN_HEIGHT = 8.0 / (3.0 * np.pi)  # mass-weighted mean column height / full height
HEAD_REACH = 16.0  # the head never moves further than this from neutral (canvas units)
DRIFT_TIMES_S = (10.0, 60.0, 180.0)
MAX_LAG = 2
HIST_BINS = 6
HAND_PRIOR = 0.05  # resting-hand prior mass, in units of the reference's hand mass
LISTEN_SETTLE_S = 0.5
"""Listening motion skips this much after each talk frame: the talk gestures' return to rest
is the end of talking, not a reaction to the user."""


@dataclass(frozen=True)
class Layout:
    """Canvas units -> pixels of a W x H frame (the renderer's mapping, without supersampling)."""

    width: int
    height: int

    @property
    def scale(self) -> float:
        return min(self.width, self.height) / 256.0

    def box(self, x0: float, y0: float, x1: float, y1: float) -> tuple[slice, slice]:
        ox, oy = (self.width - 256 * self.scale) / 2, self.height - 256 * self.scale
        cols = slice(
            max(0, int(ox + x0 * self.scale)), min(self.width, int(np.ceil(ox + x1 * self.scale)))
        )
        rows = slice(
            max(0, int(oy + y0 * self.scale)), min(self.height, int(np.ceil(oy + y1 * self.scale)))
        )
        return rows, cols


def _similarity(pixels: np.ndarray, colour, sigma: float) -> np.ndarray:
    d2 = ((pixels.astype(np.float32) - np.asarray(colour, np.float32)) ** 2).sum(-1)
    return np.exp(-d2 / (2 * sigma**2))


def _check(frames: np.ndarray, reference: np.ndarray) -> Layout:
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [n, H, W, 3], got shape {frames.shape}")
    if reference.shape != frames.shape[1:]:
        raise ValueError(
            f"reference {reference.shape} and frames {frames.shape[1:]} differ in size"
        )
    return Layout(frames.shape[2], frames.shape[1])


def _skin_colour(reference: np.ndarray, lay: Layout) -> np.ndarray:
    """Median of the cheeks of the reference (below the eyes, beside the nose)."""
    hx, hy = HEAD_CENTRE
    patches = [
        reference[lay.box(hx - 26, hy + 12, hx - 18, hy + 20)],
        reference[lay.box(hx + 18, hy + 12, hx + 26, hy + 20)],
    ]
    return np.median(np.concatenate([p.reshape(-1, 3) for p in patches]), axis=0)


def mouth_openings(frames: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Height of the dark mouth interior: the mass-weighted mean of its column heights.

    Independent of mouth width and smile; for the elliptic opening the renderer draws it is
    8 / (3 pi) of the full height, which the division undoes.
    """
    lay = _check(frames, reference)
    hx, hy = HEAD_CENTRE
    rows, cols = lay.box(hx - 40, hy + 6, hx + 40, hy + 62)
    pixels = frames[:, rows, cols]
    w = _similarity(pixels, MOUTH_INTERIOR, MOUTH_SIGMA)
    # a pixel nearer the skin than the mouth colour is skin, however dark the skin is
    closer = _similarity(pixels, _skin_colour(reference, lay), MOUTH_SIGMA) / (w + 1e-12)
    w = w / (1 + closer)
    column = w.sum(axis=1)  # [n, cols] pixels of interior per column
    height = (column**2).sum(1) / (column.sum(1) + 1e-6)
    return height / (ELLIPSE_MEAN_HEIGHT * MOUTH_OPEN_UNITS * lay.scale)


def _phase_shift(patch: np.ndarray, ref_fft: np.ndarray, reach: int) -> tuple[float, float]:
    """Sub-pixel shift of `patch` against the reference, searched within +-reach pixels.

    Half-whitened cross-power (|X|^-0.5): sharper than plain correlation, less dominated by
    small repeated details than full phase correlation (which can lock one eye onto the
    other); the bounded search rules out such far aliases anyway.
    """
    f = np.fft.rfft2(patch)
    cross = f * np.conj(ref_fft)
    corr = np.fft.irfft2(cross / (np.sqrt(np.abs(cross)) + 1e-6), s=patch.shape)
    h, w = corr.shape
    near = np.zeros_like(corr, dtype=bool)
    for rows in (slice(0, reach + 1), slice(h - reach, h)):
        for cols in (slice(0, reach + 1), slice(w - reach, w)):
            near[rows, cols] = True
    iy, ix = np.unravel_index(np.argmax(np.where(near, corr, -np.inf)), corr.shape)

    def refine(c_m: float, c_0: float, c_p: float) -> float:
        den = c_m - 2 * c_0 + c_p
        return 0.0 if abs(den) < 1e-12 else 0.5 * (c_m - c_p) / den

    dy = iy + refine(corr[iy - 1, ix], corr[iy, ix], corr[(iy + 1) % h, ix])
    dx = ix + refine(corr[iy, ix - 1], corr[iy, ix], corr[iy, (ix + 1) % w])
    return (dx - w if dx > w / 2 else dx), (dy - h if dy > h / 2 else dy)


def head_offsets(frames: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Translation of the head region against the reference, by phase correlation."""
    lay = _check(frames, reference)
    hx, hy = HEAD_CENTRE
    rows, cols = lay.box(hx - 44, hy - 34, hx + 44, hy + 20)

    def prepare(img: np.ndarray) -> np.ndarray:
        g = img[rows, cols].astype(np.float32).mean(-1)
        win = np.outer(np.hanning(g.shape[0]), np.hanning(g.shape[1])).astype(np.float32)
        return (g - g.mean()) * win

    ref_fft = np.fft.rfft2(prepare(reference))
    reach = max(2, int(np.ceil(HEAD_REACH * lay.scale)))
    out = np.array([_phase_shift(prepare(f), ref_fft, reach) for f in frames], np.float64)
    return _median5(out.reshape(-1, 2)) / lay.scale


def _median5(x: np.ndarray) -> np.ndarray:
    """Running median over 5 frames: removes the one-to-four-frame jumps a blink (the eye
    content changes) causes, keeps nods (>= 8 frames) intact."""
    if len(x) < 3:
        return x
    pad = np.pad(x, ((2, 2), (0, 0)), mode="edge")
    return np.median(np.stack([pad[i : i + len(x)] for i in range(5)]), axis=0)


def _hand_colour(reference: np.ndarray, lay: Layout) -> np.ndarray:
    rows, cols = lay.box(
        128 - HAND_REST_X - 4, HAND_REST_Y - 4, 128 - HAND_REST_X + 4, HAND_REST_Y + 4
    )
    return np.median(reference[rows, cols].reshape(-1, 3), axis=0)


def _hand_centroids(
    frames: np.ndarray, colour: np.ndarray, lay: Layout, prior: tuple | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """-> (centroids [n, 4]: x, y of the left then the right hand, masses [n, 2]). With a
    `prior` (centroids [4], masses [2]) that mass sits at those centroids too."""
    out, masses = [], []
    for k, (x0, x1) in enumerate(((20.0, 128.0), (128.0, 236.0))):
        rows, cols = lay.box(x0, 194, x1, 256)
        w = _similarity(frames[:, rows, cols], colour, SKIN_SIGMA)
        ys = (np.arange(rows.start, rows.stop) - (lay.height - 256 * lay.scale)) / lay.scale
        xs = (np.arange(cols.start, cols.stop) - (lay.width - 256 * lay.scale) / 2) / lay.scale
        mass = w.sum((1, 2))
        sx, sy = (w.sum(1) * xs).sum(1), (w.sum(2) * ys).sum(1)
        if prior is not None:
            centre, m0 = prior[0][2 * k : 2 * k + 2], prior[1][k]
            mass, sx, sy = mass + m0, sx + m0 * centre[0], sy + m0 * centre[1]
        mass = mass + 1e-6
        out += [sx / mass, sy / mass]
        masses.append(mass)
    return np.stack(out, 1), np.stack(masses, 1)


def hand_offsets(frames: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Centroids of hand-coloured pixels (colour read off the reference's resting hands) in
    the lower left and right of the frame, relative to the reference's centroids.

    A prior of `HAND_PRIOR` times the reference's hand mass sits at the resting position: a
    render that has lost a hand (blurred into the shirt: a few % of the mass left) reads as a
    resting hand, not as the centroid of stray pixels jumping across the box (variance in the
    thousands), while a hand that is there moves the estimate as before (its full mass against
    a 5 % prior)."""
    lay = _check(frames, reference)
    colour = _hand_colour(reference, lay)
    rest, rest_mass = _hand_centroids(reference[None], colour, lay)
    prior = (rest[0], HAND_PRIOR * rest_mass[0])
    return _hand_centroids(frames, colour, lay, prior)[0] - rest


def _histogram(frames: np.ndarray) -> np.ndarray:
    q = (frames.astype(np.int32) * HIST_BINS) // 256
    idx = (q[..., 0] * HIST_BINS + q[..., 1]) * HIST_BINS + q[..., 2]
    n = len(frames)
    flat = idx.reshape(n, -1) + (np.arange(n) * HIST_BINS**3)[:, None]
    hist = np.bincount(flat.ravel(), minlength=n * HIST_BINS**3).reshape(n, -1)
    return hist / hist.sum(1, keepdims=True)


def appearance_distances(frames: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Half the L1 distance of colour histograms: 0 same palette, 1 no colour in common.
    Insensitive to motion (pixels move, colours stay), sensitive to identity drift."""
    _check(frames, reference)
    return 0.5 * np.abs(_histogram(frames) - _histogram(reference[None])).sum(1)


@dataclass
class FrameEstimates:
    """Per-frame estimates of a video, computed in chunks and concatenated."""

    mouth: np.ndarray
    head: np.ndarray
    hands: np.ndarray
    appearance: np.ndarray

    @classmethod
    def of(cls, frames: np.ndarray, reference: np.ndarray) -> FrameEstimates:
        return cls(
            mouth_openings(frames, reference),
            head_offsets(frames, reference),
            hand_offsets(frames, reference),
            appearance_distances(frames, reference),
        )

    @classmethod
    def concat(cls, parts: list[FrameEstimates]) -> FrameEstimates:
        return cls(
            *(
                np.concatenate([getattr(p, k) for p in parts])
                for k in ("mouth", "head", "hands", "appearance")
            )
        )


def lip_sync(mouth: np.ndarray, agent: np.ndarray, mask: np.ndarray) -> tuple[float, int]:
    """Best Pearson correlation of mouth opening with the agent envelope on talk frames, over
    lags 0..+-2 frames (lag > 0: the mouth follows the audio). 0 when either is constant."""
    n = len(mouth)
    env = speech_envelope(agent, n)
    talk = np.asarray(mask[:n]).astype(bool)
    best, best_lag = 0.0, 0
    for lag in range(-MAX_LAG, MAX_LAG + 1):
        j = np.arange(max(0, lag), min(n, n + lag))
        j = j[talk[j]]
        m, e = mouth[j], env[j - lag]
        if len(j) < 3 or m.std() < 1e-3 or e.std() < 1e-6:
            continue
        r = float(np.corrcoef(m, e)[0, 1])
        if r > best:
            best, best_lag = r, lag
    return best, best_lag


def whole_latent_frames(n_frames: int) -> int:
    """The longest prefix of `n_frames` video frames that fills whole latents (1 + 4k): what
    the VAE can encode, and what the per-latent metrics below read."""
    return 1 + VAE_TEMPORAL_STRIDE * ((n_frames - 1) // VAE_TEMPORAL_STRIDE)


def latent_hold(x: np.ndarray) -> np.ndarray:
    """`x` [n] held at its mean over each latent's frames (frame 0 alone, then groups of the
    VAE's temporal stride): what a VAE that keeps only each latent's mean would show."""
    s = VAE_TEMPORAL_STRIDE
    n = whole_latent_frames(len(x))
    y = np.asarray(x[:n], np.float64).copy()
    y[1:] = np.repeat(y[1:].reshape(-1, s).mean(axis=1), s)
    return y


def latent_motion_kept(truth: np.ndarray, recon: np.ndarray, mask: np.ndarray) -> dict:
    """How much of the mouth's motion a VAE round trip keeps, on talk frames: the correlation
    of the truth's and the round trip's per-latent means ("group") and of the frames'
    deviations from them ("intra", the motion inside a latent). A round trip that keeps only
    each latent's mean reads intra 0, one that keeps every frame reads 1 on both."""
    n = whole_latent_frames(min(len(truth), len(recon)))
    t, r = np.asarray(truth[:n], np.float64), np.asarray(recon[:n], np.float64)
    talk = np.asarray(mask[:n]).astype(bool)
    t_hold, r_hold = latent_hold(t), latent_hold(r)

    def corr(a: np.ndarray, b: np.ndarray) -> float:
        a, b = a[talk], b[talk]
        return float(np.corrcoef(a, b)[0, 1]) if a.std() > 1e-6 and b.std() > 1e-6 else 0.0

    return {
        "mouth_group_corr": corr(t_hold, r_hold),
        "mouth_intra_corr": corr(t - t_hold, r - r_hold),
    }


def _variance(x: np.ndarray, frames: np.ndarray) -> float:
    """Summed variance of the coordinates over the selected frames (canvas units^2)."""
    return float(x[frames].var(axis=0).sum()) if frames.sum() > 1 else 0.0


def settled_listen(mask: np.ndarray) -> np.ndarray:
    """Listen frames with no talk frame in the `LISTEN_SETTLE_S` before them (bool [n])."""
    talk = np.asarray(mask).astype(bool)
    window = np.ones(int(round(LISTEN_SETTLE_S * FPS)) + 1)
    return np.convolve(talk, window)[: len(talk)] == 0


def score_estimates(
    est: FrameEstimates, agent: np.ndarray, user: np.ndarray | None, mask: np.ndarray
) -> dict:
    """The issue's metrics from per-frame estimates (see `score_video`)."""
    n = len(est.mouth)
    mask = np.asarray(mask[:n]).astype(bool)
    if len(mask) < n:
        mask = np.concatenate([mask, np.zeros(n - len(mask), bool)])
    listen, talk = ~mask, mask
    sync, lag = lip_sync(est.mouth, agent, mask)
    settled = settled_listen(mask)
    head_l, hand_l = _variance(est.head, settled), _variance(est.hands, settled)
    drift = {}
    for t in DRIFT_TIMES_S:
        stop = int(round(t * FPS))
        if stop <= n:
            drift[f"{t:g}s"] = float(est.appearance[max(0, stop - FPS) : stop].mean())
    return {
        "n_frames": n,
        "talk_frames": int(talk.sum()),
        "lip_sync": sync,
        "lip_sync_lag": lag,
        "mouth_talk": float(est.mouth[talk].mean()) if talk.any() else 0.0,
        "mouth_listen": float(est.mouth[listen].mean()) if listen.any() else 0.0,
        "listen_head_motion": head_l,
        "listen_hand_motion": hand_l,
        "listen_motion": head_l + hand_l,
        "talk_head_motion": _variance(est.head, talk),
        "talk_hand_motion": _variance(est.hands, talk),
        "appearance_mean": float(est.appearance.mean()),
        "identity_drift": drift,
        "identity_drift_end": float(est.appearance[-FPS:].mean()),
    }


def score_video(
    frames: np.ndarray,
    agent: np.ndarray,
    user: np.ndarray | None,
    mask: np.ndarray,
    reference: np.ndarray,
) -> dict:
    """All metrics of a video held in memory; motion variances in canvas units^2 (size-free).

    `user` is accepted for symmetry with the behaviour (and future reaction-timing metrics);
    the current metrics do not need it.
    """
    return score_estimates(FrameEstimates.of(frames, reference), agent, user, mask)

"""Evaluate a model on held-out puppets: render in memory, score from pixels, compare with the
ground-truth renders. Used by the model card (`benchmarks/tiny_model.py`) and the ablation
bench.

Evaluation seeds start at `EVAL_SEED_BASE`; the training configs use seeds below it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from streamavatar_cli.audio import (
    build_audio_conditioning,
    latent_windows,
    normalize_loudness,
    num_latent_frames,
)
from streamavatar_cli.config import FPS, StreamConfig
from streamavatar_cli.models import WanVAE
from streamavatar_cli.pipeline.model import StreamAvatarModel
from streamavatar_cli.pipeline.stream import StreamingGenerator
from streamavatar_cli.puppet.metrics import (
    FrameEstimates,
    latent_hold,
    latent_motion_kept,
    lip_sync,
    mouth_openings,
    score_estimates,
    whole_latent_frames,
)
from streamavatar_cli.puppet.sample import sample_clip

EVAL_SEED_BASE = 100_000
VALIDATION_SEED_BASE = 200_000
"""Puppets for choosing inference settings: neither trained on (seeds < 100000) nor reported."""


@dataclass
class Case:
    """One evaluation input: a reference, its audio and mask, and (for puppets) the truth."""

    name: str
    reference: np.ndarray  # uint8 [H, W, 3]
    agent: np.ndarray  # loudness-normalised, as `render` loads it
    user: np.ndarray | None
    mask: np.ndarray
    truth: np.ndarray | None = None  # uint8 [n, H, W, 3] ground-truth render
    seed: int | None = None  # the puppet's seed (None: not a puppet)

    @property
    def n_frames(self) -> int:
        return len(self.mask)


def puppet_case(
    seed: int, seconds: float, size: tuple[int, int], espeak: bool | None = None
) -> Case:
    """Puppet `seed` and its own conversation; `espeak` as in `sample_clip` (None: per seed,
    if installed; False: synthetic speech, the same on every machine)."""
    clip = sample_clip(seed, seconds=seconds, size=size, espeak=espeak)
    return Case(
        f"puppet-{seed}", clip.reference, normalize_loudness(clip.agent),
        normalize_loudness(clip.user), clip.mask.astype(np.int8), clip.frames, seed,
    )  # fmt: skip


def eval_cases(
    n: int, seconds: float, size: tuple[int, int], seed_base: int = EVAL_SEED_BASE
) -> list[Case]:
    return [puppet_case(seed_base + k, seconds, size) for k in range(n)]


def _image_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> [1, 3, 1, H, W] in [-1, 1] (a copy: the image may be read-only)."""
    return torch.tensor(image).float().div(127.5).sub(1).permute(2, 0, 1)[None, :, None]


def _to_uint8(video: torch.Tensor) -> np.ndarray:
    """[1, 3, n, H, W] in [-1, 1] -> uint8 [n, H, W, 3]."""
    x = ((video[0].permute(1, 2, 3, 0).float() + 1) * 127.5).round().clamp(0, 255)
    return x.to(torch.uint8).numpy()


@dataclass
class StreamTiming:
    dit: float = 0.0
    vae: float = 0.0
    first_frame: float | None = None
    started: float = field(default_factory=time.perf_counter)

    def rtf(self, n_frames: int) -> dict[str, float]:
        seconds = n_frames / FPS
        total = time.perf_counter() - self.started
        return {"dit": self.dit / seconds, "vae": self.vae / seconds, "total": total / seconds}


def stream_frames(
    model: StreamAvatarModel,
    case: Case,
    stream: StreamConfig | None = None,
    *,
    talk_only: bool = False,
    timing: StreamTiming | None = None,
) -> Iterator[np.ndarray]:
    """The student's video of `case`, chunk by chunk (uint8 [m, H, W, 3] per chunk, the
    reference frame first): constant memory, so a 3-minute stream can be scored as it goes.
    `talk_only` zeroes the listen features (the ablation's "talk-only" model)."""
    stream = stream or model.config.stream
    timing = timing or StreamTiming()
    cond = build_audio_conditioning(model.features, case.mask, case.agent, case.user)
    listen = torch.zeros_like(cond.listen) if talk_only else cond.listen
    n_latent = num_latent_frames(case.n_frames)
    window = model.config.dit.audio_frames
    c = stream.chunk_frames
    n_chunks = -(-n_latent // c)
    gen = StreamingGenerator(model.dit, stream)
    decoder = model.vae.stream_decoder()
    emitted = 0
    with torch.inference_mode():
        t = time.perf_counter()
        reference = model.vae.encode(_image_tensor(case.reference))
        gen.start(reference)
        first = decoder.decode(reference)
        timing.vae += time.perf_counter() - t
        yield _to_uint8(first)
        emitted = 1
        for chunk in range(1, n_chunks + 1):
            first_latent = c * (chunk - 1) + 1
            t = time.perf_counter()
            lat = gen.next_chunk(
                latent_windows(cond.talk, c, window, first=first_latent)[None],
                latent_windows(listen, c, window, first=first_latent)[None],
            )
            t2 = time.perf_counter()
            frames = _to_uint8(decoder.decode(lat))[: case.n_frames - emitted]
            timing.dit += t2 - t
            timing.vae += time.perf_counter() - t2
            if timing.first_frame is None:
                timing.first_frame = time.perf_counter() - timing.started
            emitted += len(frames)
            yield frames


def score_stream(
    model: StreamAvatarModel,
    case: Case,
    stream: StreamConfig | None = None,
    *,
    talk_only: bool = False,
    keep_frames: tuple[int, ...] = (),
) -> dict:
    """Metrics of the student's stream of `case` (+ PSNR/SSIM against the truth when there is
    one, + RTF and first-frame delay). `keep_frames`: frame indices returned as images."""
    timing = StreamTiming()
    parts, kept, quality, done = [], {}, [], 0
    for frames in stream_frames(model, case, stream, talk_only=talk_only, timing=timing):
        parts.append(FrameEstimates.of(frames, case.reference))
        for j in keep_frames:
            if done <= j < done + len(frames):
                kept[j] = frames[j - done]
        if case.truth is not None and done > 0:
            quality.append(frame_quality(frames, case.truth[done : done + len(frames)]))
        done += len(frames)
    scores = score_estimates(FrameEstimates.concat(parts), case.agent, case.user, case.mask)
    scores["rtf"] = timing.rtf(case.n_frames)
    scores["first_frame_delay"] = timing.first_frame
    if quality:
        q = np.concatenate(quality)
        scores["psnr"], scores["ssim"] = float(q[:, 0].mean()), float(q[:, 1].mean())
    scores["frames"] = kept
    return scores


def score_truth(case: Case) -> dict:
    return score_estimates(
        FrameEstimates.of(case.truth, case.reference), case.agent, case.user, case.mask
    )


@torch.no_grad()
def score_vae_round_trip(vae: WanVAE, case: Case) -> dict:
    """The ground truth encoded and decoded by `vae`: the ceiling of any DiT that generates
    this VAE's latents (a metric the VAE loses, the student cannot have). Also how much of the
    mouth's motion it keeps per latent and inside one (`latent_motion_kept`), and the truth's
    lip-sync held at its latent means (`lip_sync_hold`: where a mean-only VAE would stop)."""
    from streamavatar_cli.train.data import to_video_tensor

    n = whole_latent_frames(case.n_frames)
    frames = _to_uint8(vae.decode(vae.encode(to_video_tensor(case.truth[:n]))))
    est = FrameEstimates.of(frames, case.reference)
    scores = score_estimates(est, case.agent, case.user, case.mask[:n])
    truth_mouth = mouth_openings(case.truth[:n], case.reference)
    scores.update(latent_motion_kept(truth_mouth, est.mouth, case.mask))
    scores["lip_sync_hold"] = lip_sync(latent_hold(truth_mouth), case.agent, case.mask[:n])[0]
    return with_quality(scores, frames, case)


def with_quality(scores: dict, frames: np.ndarray, case: Case) -> dict:
    """`scores` plus the mean PSNR/SSIM of `frames` against the truth, from frame 1 on (frame
    0 is the reference itself)."""
    q = frame_quality(frames[1:], case.truth[1 : len(frames)])
    scores["psnr"], scores["ssim"] = float(q[:, 0].mean()), float(q[:, 1].mean())
    return scores


def score_truth_talk_only(case: Case) -> dict:
    """The ground truth's "talk-only": the puppet given the same agent audio and mask but no
    user speech, i.e. how much of its listening motion the user's speech causes."""
    from streamavatar_cli.puppet import behaviour, identity_from_seed, render_frames

    size = (case.reference.shape[1], case.reference.shape[0])
    state = behaviour(case.agent, None, case.mask, case.seed)
    frames = render_frames(identity_from_seed(case.seed), state, size)
    return score_estimates(FrameEstimates.of(frames, case.reference), case.agent, None, case.mask)


def frame_quality(frames: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-frame [PSNR dB, SSIM] of uint8 frames against the truth (same shape)."""
    from streamavatar_cli.train.losses import ssim

    a = torch.from_numpy(frames).float().div(127.5).sub(1).permute(0, 3, 1, 2)
    b = torch.from_numpy(truth[: len(frames)]).float().div(127.5).sub(1).permute(0, 3, 1, 2)
    mse = ((a - b) / 2).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    psnr = 10 * torch.log10(1 / mse)
    s = torch.stack([ssim(a[i : i + 1], b[i : i + 1]) for i in range(len(a))])
    return torch.stack([psnr, s], 1).numpy()


@torch.no_grad()
def teacher_frames(teacher: StreamAvatarModel, case: Case, window_latents: int, steps: int,
                   shift: float, seed: int = 0, talk_guidance: float = 1.0,
                   listen_guidance: float = 1.0, talk_only: bool = False) -> np.ndarray:  # fmt: skip
    """The teacher's multi-step Euler sampler on the first 1 + 4 W frames of `case`
    (bidirectional: one window, the length it was trained on), guided as in `ode-pairs`;
    `talk_only` zeroes the listen features, as `stream_frames` does."""
    from streamavatar_cli.train.common import guided_v
    from streamavatar_cli.train.ode_pairs import sampler_grid

    cond = build_audio_conditioning(teacher.features, case.mask, case.agent, case.user)
    window = teacher.config.dit.audio_frames
    talk = latent_windows(cond.talk, window_latents, window)[None]
    listen = latent_windows(cond.listen, window_latents, window)[None]
    if talk_only:
        listen = torch.zeros_like(listen)
    ref = teacher.vae.encode(_image_tensor(case.reference))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((1, ref.shape[1], window_latents, *ref.shape[3:]), generator=g)
    grid = sampler_grid(steps, shift, ())
    for a, b in zip(grid[:-1], grid[1:], strict=True):
        v = guided_v(teacher.dit, ref, x, torch.full((1,), a), talk, listen,
                     talk_guidance, listen_guidance)  # fmt: skip
        x = x + (b - a) * v
    video = teacher.vae.decode(torch.cat([ref, x], dim=2))
    return _to_uint8(video)[: case.n_frames]


@dataclass
class StreamEstimates:
    """The per-frame record of one stream, before it is reduced to numbers: what the ablation
    bench needs to score prefixes of one run (the first 60 s of a 180 s stream is itself a
    60 s stream: the generator is causal) and to draw metrics over time."""

    estimates: FrameEstimates
    quality: np.ndarray  # [k, 3]: frame index, PSNR dB, SSIM (every `quality_every`-th frame)
    frames: dict[int, np.ndarray]
    rtf: dict[str, float]
    first_frame_delay: float | None

    @property
    def n_frames(self) -> int:
        return len(self.estimates.mouth)

    def scores(self, case: Case, n_frames: int | None = None) -> dict:
        """`score_stream`'s dict for the first `n_frames` frames (default: all); RTF and
        first-frame delay are the whole run's."""
        n = self.n_frames if n_frames is None else min(n_frames, self.n_frames)
        est = FrameEstimates(*(getattr(self.estimates, k)[:n] for k in _ESTIMATE_FIELDS))
        scores = score_estimates(est, case.agent, case.user, case.mask)
        scores["rtf"], scores["first_frame_delay"] = self.rtf, self.first_frame_delay
        q = self.quality[self.quality[:, 0] < n]
        if len(q):
            scores["psnr"], scores["ssim"] = float(q[:, 1].mean()), float(q[:, 2].mean())
        return scores


_ESTIMATE_FIELDS = ("mouth", "head", "hands", "appearance")


def estimate_stream(
    model: StreamAvatarModel,
    case: Case,
    stream: StreamConfig | None = None,
    *,
    talk_only: bool = False,
    keep_frames: tuple[int, ...] = (),
    quality_every: int = 1,
    n_frames: int | None = None,
) -> StreamEstimates:
    """`score_stream` without the reduction. `quality_every` > 1 compares only every k-th
    frame with the truth: SSIM costs about 15 ms a frame on a CPU core at 128x128, more than
    the tiny model's own generation, and a mean over 1 frame in 5 is as good an estimate.
    `n_frames` stops the stream early: the first n frames of `case`'s stream, exactly."""
    if quality_every < 1:
        raise ValueError(f"quality_every={quality_every} must be >= 1")
    limit = case.n_frames if n_frames is None else min(n_frames, case.n_frames)
    timing = StreamTiming()
    parts, kept, quality, done = [], {}, [], 0
    for frames in stream_frames(model, case, stream, talk_only=talk_only, timing=timing):
        frames = frames[: limit - done]
        parts.append(FrameEstimates.of(frames, case.reference))
        for j in keep_frames:
            if done <= j < done + len(frames):
                kept[j] = frames[j - done]
        pick = np.arange(done, done + len(frames))
        pick = pick[(pick > 0) & (pick % quality_every == 0)]
        if case.truth is not None and len(pick):
            q = frame_quality(frames[pick - done], case.truth[pick])
            quality.append(np.concatenate([pick[:, None].astype(np.float64), q], 1))
        done += len(frames)
        if done >= limit:
            break
    return StreamEstimates(
        FrameEstimates.concat(parts),
        np.concatenate(quality) if quality else np.zeros((0, 3)),
        kept,
        timing.rtf(done),
        timing.first_frame,
    )

"""Streaming benchmarks: the cost per chunk stays flat, memory stays flat, the KV cache pays.

All three run small random DiTs on the CPU: the claims are about shape (constant per chunk,
cheaper than recomputing), which a small model shows as well as a large one and in seconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from streamavatar_cli.bench.measure import (
    MB,
    Result,
    alternate,
    max_abs_diff,
    median_ms,
    peak_rss_bytes,
    run_child,
)
from streamavatar_cli.config import FPS, MODEL_PRESETS, VAE_TEMPORAL_STRIDE, DiTConfig, StreamConfig
from streamavatar_cli.models import WanDiT, WanVAE
from streamavatar_cli.models.attention import FrameMaskAttention
from streamavatar_cli.models.rapr import chunk_context, rope_positions
from streamavatar_cli.pipeline.sampler import NoiseSource, predict_x0, renoise, timestep
from streamavatar_cli.pipeline.stream import StreamingGenerator


def bench_dit(dim: int, layers: int, seed: int = 0) -> WanDiT:
    """The tiny preset widened to `dim` (head_dim 32), random weights everywhere that matters:
    the audio output projections and the prompt are non-zero, so no path is a no-op."""
    cfg = dataclasses.replace(
        DiTConfig.preset("tiny"), dim=dim, ffn_dim=4 * dim, num_heads=dim // 32, num_layers=layers
    )
    torch.manual_seed(seed)
    dit = WanDiT(cfg).eval().requires_grad_(False)
    with torch.no_grad():
        dit.prompt_context.normal_()
        for module in dit.audio_modules():
            for name, p in module.named_parameters():
                if name.startswith("o."):
                    p.normal_(0.0, 0.02)
    return dit


def chunk_audio(dit: WanDiT, n: int, seed: int) -> list[torch.Tensor]:
    """`n` random audio windows [1, chunk_frames, window, layers, dim], one per chunk."""
    cfg, g = dit.config, torch.Generator().manual_seed(seed)
    shape = (1, 3, cfg.audio_window, cfg.audio_feature_layers, cfg.audio_feature_dim)
    return [torch.randn(shape, generator=g) for _ in range(n)]


def _reference(dit: WanDiT, latent: tuple[int, int]) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, dit.config.in_dim, 1, *latent, generator=g)


# ---- 1. time per chunk is flat --------------------------------------------------------------


@dataclass(frozen=True)
class FlatCost(Result):
    early_ms: float
    late_ms: float
    early_chunk: int
    late_chunk: int

    title = "flat cost: time per chunk ~200 / ~10"
    target = 1.10

    def detail(self) -> str:
        return (
            f"chunk {self.late_chunk}: {self.late_ms:.1f} ms, "
            f"chunk {self.early_chunk}: {self.early_ms:.1f} ms"
        )


def stream_flat_cost(
    dim: int = 128,
    layers: int = 4,
    latent: tuple[int, int] = (16, 16),
    early: int = 10,
    late: int = 200,
    rounds: int = 7,
) -> FlatCost:
    """Median time of the chunks around `late` / around `early`, timed alternately: one
    generator is first run ahead to chunk `late`, then the two take turns."""
    dit = bench_dit(dim, layers)
    audio = chunk_audio(dit, rounds, seed=2)
    ref = _reference(dit, latent)
    generators = {
        "early": StreamingGenerator(dit, StreamConfig()),
        "late": StreamingGenerator(dit, StreamConfig()),
    }
    for name, first in (("early", early), ("late", late)):
        generators[name].start(ref)
        for _ in range(first - rounds // 2 - 1):
            generators[name].next_chunk(audio[0], audio[0])
    times = alternate(
        {name: lambda i, g=g: g.next_chunk(audio[i], audio[i]) for name, g in generators.items()},
        rounds,
        warmup=False,
    )
    early_ms, late_ms = median_ms(times["early"]), median_ms(times["late"])
    return FlatCost(late_ms / early_ms, early_ms, late_ms, early, late)


# ---- 2. memory is flat: peak RSS of a long and a short stream, one process each -------------


@dataclass(frozen=True)
class StreamMemory(Result):
    long_seconds: float
    short_seconds: float
    long_peak_mb: float
    short_peak_mb: float
    long_growth_mb: float
    short_growth_mb: float
    kv_cache_mb: float
    decoder_state_mb: float

    title = "flat memory: peak RSS long / short stream"
    target = 1.10

    def detail(self) -> str:
        return (
            f"{self.long_seconds:.0f} s: {self.long_peak_mb:.0f} MB "
            f"(+{self.long_growth_mb:.1f} MB while streaming), {self.short_seconds:.0f} s: "
            f"{self.short_peak_mb:.0f} MB (+{self.short_growth_mb:.1f} MB)"
        )


def chunks_for(seconds: float, chunk_frames: int = 3) -> int:
    """Chunks of a stream of `seconds` (a chunk is chunk_frames x 4 video frames at 25 fps)."""
    frames_per_chunk = chunk_frames * VAE_TEMPORAL_STRIDE
    return max(1, round(seconds * FPS / frames_per_chunk))


def stream_memory(
    long_seconds: float = 120.0, short_seconds: float = 10.0, resolution: int = 128
) -> StreamMemory:
    """Generate and decode (frames discarded) the random tiny model's stream, in a child
    process per length, and compare the peaks."""
    runs = {
        seconds: run_child("stream", chunks=chunks_for(seconds), resolution=resolution)
        for seconds in (long_seconds, short_seconds)
    }
    long, short = runs[long_seconds], runs[short_seconds]
    return StreamMemory(
        long["peak_rss_bytes"] / short["peak_rss_bytes"],
        long_seconds,
        short_seconds,
        long["peak_rss_bytes"] / MB,
        short["peak_rss_bytes"] / MB,
        (long["peak_rss_bytes"] - long["setup_peak_rss_bytes"]) / MB,
        (short["peak_rss_bytes"] - short["setup_peak_rss_bytes"]) / MB,
        long["kv_cache_bytes"] / MB,
        long["decoder_state_bytes"] / MB,
    )


@torch.inference_mode()
def stream_memory_task(chunks: int, resolution: int, seed: int = 0) -> dict[str, Any]:
    """(In the child.) The tiny model's full loop: encode the reference, stream, decode."""
    preset = MODEL_PRESETS["tiny"]
    torch.manual_seed(seed)
    dit = WanDiT(preset.dit).eval()
    vae = WanVAE(preset.vae).eval()
    audio = chunk_audio(dit, 8, seed)
    generator, decoder = StreamingGenerator(dit, StreamConfig(seed=seed)), vae.stream_decoder()
    image = torch.rand(
        1, 3, 1, resolution, resolution, generator=torch.Generator().manual_seed(seed)
    )
    setup_peak = peak_rss_bytes()
    reference = vae.encode(image * 2 - 1)
    frames = decoder.decode(reference).shape[2]
    generator.start(reference)
    for i in range(chunks):
        frames += decoder.decode(generator.next_chunk(audio[i % 8], audio[(i + 1) % 8])).shape[2]
    return {
        "chunks": chunks,
        "frames": frames,
        "peak_rss_bytes": peak_rss_bytes(),
        "setup_peak_rss_bytes": setup_peak,
        "kv_cache_bytes": generator.cache.nbytes,
        "decoder_state_bytes": decoder.cache.nbytes,
    }


# ---- 3. the cache pays: cached streaming vs recomputing the visible window ------------------


class RecomputeGenerator:
    """The no-cache baseline: every denoising step re-runs the DiT over all the frames the chunk
    sees, [sink | window | chunk], from their stored latents (the ones the cache would have
    encoded: the last step's input with `noisy` updates, x0 at t = 0 with `clean`).

    Context frames attend to the context only, the chunk to everything, at RAPR positions.
    With one DiT layer this equals the cached generator exactly: a context frame's K/V then
    depend on nothing but its own latent. With more layers no fixed-size recompute can equal
    it, since a cached frame's deeper K/V also saw frames the window has since evicted.
    """

    def __init__(self, dit: WanDiT, config: StreamConfig):
        self.dit, self.config = dit, config.validate()

    @torch.no_grad()
    def start(self, reference_latent: torch.Tensor) -> None:
        self.latent_shape = (
            *reference_latent.shape[:2],
            self.config.chunk_frames,
            *reference_latent.shape[3:],
        )
        self.grid_hw = self.dit.grid(reference_latent)[1:]
        self.text_kv = self.dit.text_kv(None, reference_latent.shape[0])
        self.noise = NoiseSource(self.config.seed)
        self.history = {0: (reference_latent, 0.0)}  # latent frame -> (latent, timestep)
        self.chunks_done = 0

    @torch.no_grad()
    def next_chunk(
        self, talk_audio: torch.Tensor | None = None, listen_audio: torch.Tensor | None = None
    ) -> torch.Tensor:
        cfg = self.config
        context = chunk_context(self.chunks_done + 1, cfg)
        seen = context.sink + context.window
        attention = self._attention(
            len(seen), rope_positions(context.frames, context.current[0], cfg)
        )
        talk, listen = self.dit.audio_tokens(talk_audio, listen_audio)
        x_seen = [self.history[f][0] for f in seen]
        t_seen = [self.history[f][1] for f in seen]
        sigmas = cfg.sigmas()
        x = self.noise(self.latent_shape).to(self.dit.device)
        for step, sigma in enumerate(sigmas):
            t = torch.tensor([t_seen + [timestep(sigma)] * len(context.current)])
            grid = (len(context.frames), *self.grid_hw)
            v = self.dit.run_blocks(
                torch.cat([*x_seen, x], dim=2), t, self.text_kv, talk, listen, attention, grid
            )
            x0 = predict_x0(x, v[:, :, len(seen) :], sigma)
            if step < len(sigmas) - 1:
                noise = self.noise(self.latent_shape).to(self.dit.device)
                x = renoise(x0, noise, sigmas[step + 1])
        kept, t_kept = (x, timestep(sigmas[-1])) if cfg.cache_update == "noisy" else (x0, 0.0)
        for i, frame in enumerate(context.current):
            self.history[frame] = (kept[:, :, i : i + 1], t_kept)
        self._evict(context.current[-1] + 1)
        self.chunks_done += 1
        return x0

    def _attention(self, n_seen: int, positions: list[int]) -> FrameMaskAttention:
        n = len(positions)
        mask = torch.zeros(n, n, dtype=torch.bool)
        mask[:n_seen, :n_seen] = True
        mask[n_seen:] = True
        rows = torch.tensor(positions).expand(n, n)
        cfg = self.dit.config
        return FrameMaskAttention(
            mask, rows, *self.grid_hw, cfg.head_dim, cfg.rope_theta, self.dit.device
        )

    def _evict(self, next_start: int) -> None:
        """Keep the frames a later chunk can still see: the sink and the last window."""
        cfg = self.config
        keep = set(range(cfg.sink_frames)) | set(range(next_start - cfg.window_frames, next_start))
        self.history = {f: h for f, h in self.history.items() if f in keep}


@dataclass(frozen=True)
class CacheSpeedup(Result):
    cached_ms: float
    recompute_ms: float
    max_abs_diff: float
    layers: int

    title = "cache pays: recompute-window / cached time per chunk"
    target = 2.5
    higher_is_better = True

    def detail(self) -> str:
        return (
            f"cached {self.cached_ms:.1f} ms, recompute {self.recompute_ms:.1f} ms per chunk; "
            f"outputs differ by {self.max_abs_diff:.1e} ({self.layers} layer)"
        )


def cache_speedup(
    dim: int = 256, latent: tuple[int, int] = (32, 32), chunks: int = 12, warm: int = 4
) -> CacheSpeedup:
    """Cached vs recompute on a one-layer DiT (so the outputs must be equal), timed alternately
    over the chunks after `warm`, when the window is full."""
    dit = bench_dit(dim, layers=1)
    audio = chunk_audio(dit, chunks, seed=3)
    ref = _reference(dit, latent)
    cached, recompute = (
        StreamingGenerator(dit, StreamConfig()),
        RecomputeGenerator(dit, StreamConfig()),
    )
    outputs: dict[str, list[torch.Tensor]] = {"cached": [], "recompute": []}
    for generator in (cached, recompute):
        generator.start(ref)
    for a in audio[:warm]:
        outputs["cached"].append(cached.next_chunk(a, a))
        outputs["recompute"].append(recompute.next_chunk(a, a))

    def run(name: str, generator: StreamingGenerator | RecomputeGenerator) -> Callable:
        return lambda i: outputs[name].append(
            generator.next_chunk(audio[warm + i], audio[warm + i])
        )

    runs = {"cached": run("cached", cached), "recompute": run("recompute", recompute)}
    times = alternate(runs, chunks - warm, warmup=False)
    diff = max(
        max_abs_diff(a, b) for a, b in zip(outputs["cached"], outputs["recompute"], strict=True)
    )
    cached_ms, recompute_ms = median_ms(times["cached"]), median_ms(times["recompute"])
    return CacheSpeedup(
        recompute_ms / cached_ms, cached_ms, recompute_ms, diff, dit.config.num_layers
    )

"""The streaming generator: one chunk of latent frames at a time, at constant cost.

Reads like the paper: `start` encodes the reference into the cache once (t = 0); every
`next_chunk` denoises fresh noise in `steps` few-step flow-matching steps against the cached
sink + window, updates the cache (`noisy`: keep the last step's K/V; `clean`: one more forward
at t = 0 on the result), and returns the chunk's clean latents.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from streamavatar_cli.config import StreamConfig
from streamavatar_cli.models.dit import WanDiT, compile_blocks
from streamavatar_cli.models.kv_cache import CachedAttention, KVCache
from streamavatar_cli.models.rapr import check_rapr, chunk_start
from streamavatar_cli.pipeline.sampler import NoiseSource, predict_x0, renoise, timestep


@dataclass
class ChunkTrace:
    """Every DiT call of the last chunk: what went in and what came out (tests, training)."""

    frames: list[int]
    key_frames: list[int] = field(default_factory=list)
    key_positions: list[int] = field(default_factory=list)
    step_inputs: list[torch.Tensor] = field(default_factory=list)
    step_timesteps: list[float] = field(default_factory=list)
    step_outputs: list[torch.Tensor] = field(default_factory=list)
    cache_input: torch.Tensor | None = None
    cache_timestep: float = 0.0


class StreamingGenerator:
    """Chunk-by-chunk generation with the reference sink, rolling KV cache and RAPR.

    Any number of chunks can follow one `start`; the cache is allocated once (reused by the next
    `start` when the shape matches) and memory stays constant. Deterministic for `config.seed`.
    Set `keep_trace` to record the last chunk's DiT calls in `trace`; `compile` to run the DiT's
    blocks through `torch.compile` (in place, with an eager fallback; see `compile_blocks`).
    `grad_last_step` (the `distill` stage's student forcing) runs each chunk's last denoising
    step with autograd, so the returned x0 carries gradient; earlier steps and the cache do not.
    """

    def __init__(
        self,
        dit: WanDiT,
        config: StreamConfig,
        *,
        keep_trace: bool = False,
        compile: bool = False,
        grad_last_step: bool = False,
    ):
        self.dit = compile_blocks(dit) if compile else dit
        self.grad_last_step = grad_last_step
        self.config = config.validate()
        self.warning = check_rapr(self.config)
        self.keep_trace = keep_trace
        self.trace: ChunkTrace | None = None
        self.cache: KVCache | None = None
        self.chunks_done = 0

    @torch.no_grad()
    def start(self, reference_latent: torch.Tensor, context: torch.Tensor | None = None) -> None:
        """Begin a stream from the clean reference latent [B, C, 1, h, w]."""
        if reference_latent.ndim != 5 or reference_latent.shape[2] != 1:
            raise ValueError(
                f"reference latent {tuple(reference_latent.shape)} must be [B, C, 1, h, w]"
            )
        dit, cfg = self.dit, self.config
        batch = reference_latent.shape[0]
        _, self.height, self.width = dit.grid(reference_latent)
        self._prepare_cache(batch)
        self.text_kv = dit.text_kv(context, batch)
        self.noise = NoiseSource(cfg.seed)  # CPU tensors, moved by `_on_device`
        self.latent_shape = (
            batch,
            dit.config.in_dim,
            cfg.chunk_frames,
            *reference_latent.shape[3:],
        )
        self.chunks_done = 0
        attention = self._attention([0], write=True)
        self._dit(reference_latent.to(dit.device), 0.0, None, None, attention)
        self.cache.commit([0])

    def next_chunk(
        self,
        talk_audio: torch.Tensor | None = None,
        listen_audio: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Generate the next chunk: latents [B, C, chunk_frames, h, w].

        `talk_audio` / `listen_audio`: windowed audio features of the chunk's latent frames,
        [B, chunk_frames, window, layers, dim] (see `audio.latent_windows`), or None.
        `noise`: the chunk's starting noise (default: the next draw of the seeded source), to
        replay a recorded trajectory's start.
        """
        if self.cache is None:
            raise RuntimeError("call start(reference_latent) before next_chunk()")
        cfg = self.config
        start = chunk_start(self.chunks_done + 1, cfg.chunk_frames)
        frames = list(range(start, start + cfg.chunk_frames))
        with torch.set_grad_enabled(self.grad_last_step and torch.is_grad_enabled()):
            talk, listen = self.dit.audio_tokens(talk_audio, listen_audio)
            # Tokens of zeroed features: the guidance's unconditional inputs (None: no guidance).
            # Listen features are zero while the agent talks; then the guided pass equals the
            # plain one and is skipped.
            silent = unheard = None
            if talk_audio is not None and cfg.talk_guidance != 1.0:
                silent, _ = self.dit.audio_tokens(torch.zeros_like(talk_audio), None)
            if listen_audio is not None and cfg.listen_guidance != 1.0 and listen_audio.any():
                _, unheard = self.dit.audio_tokens(None, torch.zeros_like(listen_audio))
        noisy_update = cfg.cache_update == "noisy"
        attention = self._attention(frames, write=False)
        trace = (
            ChunkTrace(frames, attention.key_frames, attention.key_positions)
            if self.keep_trace
            else None
        )

        sigmas = cfg.sigmas()
        x = self._on_device(self.noise(self.latent_shape) if noise is None else noise)
        for step, sigma in enumerate(sigmas):
            last = step == len(sigmas) - 1
            attention.write = last and noisy_update
            with torch.set_grad_enabled(last and self.grad_last_step and torch.is_grad_enabled()):
                guided_listen = unheard if cfg.listen_guided(step) else None
                v = self._guided_dit(x, timestep(sigma), talk, listen, silent, guided_listen,
                                     attention)  # fmt: skip
            if trace is not None:
                trace.step_inputs.append(x)
                trace.step_timesteps.append(timestep(sigma))
                trace.step_outputs.append(v)
            x0 = predict_x0(x, v, sigma)
            if not last:
                noise = self._on_device(self.noise(self.latent_shape))
                x = renoise(x0, noise, sigmas[step + 1])
        if not noisy_update:
            with torch.no_grad():
                self._dit(x0.detach(), 0.0, talk, listen, self._attention(frames, write=True))
        if trace is not None:
            trace.cache_input, trace.cache_timestep = (
                (x, trace.step_timesteps[-1]) if noisy_update else (x0, 0.0)
            )
            self.trace = trace
        self.cache.commit(frames)
        self.chunks_done += 1
        return x0

    def _on_device(self, x: torch.Tensor) -> torch.Tensor:
        """Host to device without stalling the host: a plain copy from pageable memory waits for
        the GPU to finish its queued work, once per denoising step; a pinned one does not."""
        device = self.dit.device
        if device.type != "cuda":
            return x.to(device)
        return x.pin_memory().to(device, non_blocking=True)

    def _dit(self, x, t: float, talk, listen, attention: CachedAttention) -> torch.Tensor:
        batch, _, n_frames = x.shape[:3]
        t_frames = torch.full((batch, n_frames), t, device=x.device)
        return self.dit.run_blocks(
            x, t_frames, self.text_kv, talk, listen, attention, (n_frames, self.height, self.width)
        )

    def _guided_dit(
        self, x, t: float, talk, listen, silent, unheard, attention: CachedAttention
    ) -> torch.Tensor:
        """The velocity with classifier-free guidance on each track,
        v + (g_talk - 1) (v - v(silent talk)) + (g_listen - 1) (v - v(unheard listen)),
        i.e. v0 + g (v - v0) with one of them. `silent` / `unheard` are the zeroed features'
        tokens (None: that guidance is off). Only the conditional pass, run last, may write
        the cache."""
        if silent is None and unheard is None:
            return self._dit(x, t, talk, listen, attention)
        cfg = self.config
        write, attention.write = attention.write, False
        v_talk0 = None if silent is None else self._dit(x, t, silent, listen, attention)
        v_listen0 = None if unheard is None else self._dit(x, t, talk, unheard, attention)
        attention.write = write
        v = self._dit(x, t, talk, listen, attention)
        out = v
        if v_talk0 is not None:
            out = out + (cfg.talk_guidance - 1.0) * (v - v_talk0)
        if v_listen0 is not None:
            out = out + (cfg.listen_guidance - 1.0) * (v - v_listen0)
        return out

    def _attention(self, frames: list[int], write: bool) -> CachedAttention:
        cfg = self.dit.config
        return CachedAttention(
            self.cache, frames, height=self.height, width=self.width,
            head_dim=cfg.head_dim, theta=cfg.rope_theta, write=write,
        )  # fmt: skip

    def _prepare_cache(self, batch: int) -> None:
        dit = self.dit
        spec = dict(
            n_layers=dit.config.num_layers, batch=batch, n_heads=dit.config.num_heads,
            head_dim=dit.config.head_dim, tokens_per_frame=self.height * self.width,
            device=dit.device, dtype=dit.dtype,
        )  # fmt: skip
        if self.cache is not None and self.cache_spec == spec:
            self.cache.reset()
            return
        self.cache = KVCache(self.config, **spec)
        self.cache_spec = spec

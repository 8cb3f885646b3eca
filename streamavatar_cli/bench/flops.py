"""Analytic FLOPs of a streaming chunk (DiT) and of a latent frame's decode (VAE), the RTF they
imply at a sustained TFLOP/s, and a check of the count against torch's FlopCounterMode.

FLOPs = 2 x multiply-accumulates of the matrix products and convolutions, the ops
`FlopCounterMode` counts (addmm/mm/bmm, convolution, SDPA). Not counted, here or by torch:
norms, RoPE, modulation, activations, residual adds, the KV-cache copies: elementwise work
that is memory-bound, not FLOP-bound. The counter runs on a model built on the `meta` device,
so the real 5B dimensions cost neither memory nor time.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from streamavatar_cli.config import FPS, VAE_TEMPORAL_STRIDE, DiTConfig, StreamConfig, VAEConfig

PAPER_RTF = {"dit": 0.69, "vae": 0.82}
"""StreamAvatar's measured real-time factors on one H800 at 928x704 (the paper)."""


@dataclass(frozen=True)
class DiTFlops:
    """One DiT forward over a chunk (queries of its frames, keys of sink + window + chunk),
    and the audio projection, which runs once per chunk for all of its forwards."""

    linear: float  # self-attn q/k/v/o, cross-attn q/o, FFN
    self_attention: float  # scores + weighted sum over sink + window + chunk keys
    cross_attention: float  # scores + weighted sum over the text tokens
    audio: float  # talk + listen attention: q/o and k/v projections, frame-local attention
    embed: float  # patch embedding, head, time embedding
    audio_projection: float  # talk + listen audio_proj MLPs: per chunk, not per forward

    @property
    def forward(self) -> float:
        return self.linear + self.self_attention + self.cross_attention + self.audio + self.embed

    def chunk(self, forwards: int) -> float:
        return forwards * self.forward + self.audio_projection


def dit_chunk_flops(
    cfg: DiTConfig,
    tokens_per_frame: int,
    query_frames: int = 3,
    key_frames: int = 13,
    audio: bool = True,
) -> DiTFlops:
    """FLOPs of a streaming chunk (wan22-backbone.md 5.3, plus the audio modules).

    The prompt's cross-attention K/V are computed once per job and are not part of a chunk's
    cost. The time embedding runs once per frame, not per token.
    """
    d, n_q = cfg.dim, query_frames * tokens_per_frame
    n_kv, layers = key_frames * tokens_per_frame, cfg.num_layers
    linear = layers * n_q * (2 * 4 * d * d + 2 * 2 * d * d + 2 * 2 * d * cfg.ffn_dim)
    self_attention = layers * 4 * n_q * n_kv * d
    cross_attention = layers * 4 * n_q * cfg.text_len * d
    n_audio = query_frames * cfg.audio_tokens  # audio tokens over the chunk's frames
    per_module = layers * (
        2 * 2 * n_q * d * d  # q and o
        + 2 * 2 * n_audio * cfg.audio_context_dim * d  # k and v of the audio tokens
        + 4 * n_q * cfg.audio_tokens * d  # each frame's tokens attend to its audio tokens
    )
    window = cfg.audio_window * cfg.audio_feature_layers * cfg.audio_feature_dim
    hidden, out = cfg.audio_hidden_dim, cfg.audio_tokens * cfg.audio_context_dim
    projection = 2 * query_frames * (window * hidden + hidden * hidden + hidden * out)
    patch = math.prod(cfg.patch_size)
    embed = 2 * n_q * d * (cfg.in_dim * patch + cfg.out_dim * patch)
    embed += 2 * query_frames * (cfg.freq_dim * d + d * d + d * 6 * d)  # time MLP, per frame
    if not audio:
        per_module = projection = 0
    return DiTFlops(linear, self_attention, cross_attention, 2 * per_module, embed, 2 * projection)


def _conv(c_in: int, c_out: int, kernel: int, positions: int) -> int:
    return 2 * c_in * c_out * kernel * positions


def vae_decode_flops(cfg: VAEConfig, latent_hw: tuple[int, int], first: bool = False) -> float:
    """FLOPs of decoding one latent frame (4 video frames; 1 for the stream's first) with the
    Wan2.2 decoder, following `models/vae.py` stage by stage (wan22-backbone.md 5.4)."""
    mult = cfg.dim_mult
    dims = [cfg.decoder_base_dim * m for m in (mult[-1], *reversed(mult))]
    up_time = tuple(reversed(cfg.temporal_downsample))
    hw, frames = latent_hw[0] * latent_hw[1], 1
    total = _conv(cfg.z_dim, cfg.z_dim, 1, hw) + _conv(cfg.z_dim, dims[0], 27, hw)  # conv2, conv1

    def residual(c_in: int, c_out: int) -> int:
        shortcut = _conv(c_in, c_out, 1, hw * frames) if c_in != c_out else 0
        return _conv(c_in, c_out, 27, hw * frames) + _conv(c_out, c_out, 27, hw * frames) + shortcut

    attention = _conv(dims[0], 4 * dims[0], 1, hw) + 4 * hw * hw * dims[0]  # qkv + proj, SDPA
    total += 2 * residual(dims[0], dims[0]) + attention
    for i in range(len(mult)):
        c_in, c_out = dims[i], dims[i + 1]
        for j in range(cfg.num_res_blocks + 1):
            total += residual(c_in if j == 0 else c_out, c_out)
        if i == len(mult) - 1:
            break
        if up_time[i] and not first:  # time_conv (3, 1, 1) to 2x channels, then 2x frames
            total += _conv(c_out, 2 * c_out, 3, hw * frames)
            frames *= 2
        hw *= 4
        total += _conv(c_out, c_out, 9, hw * frames)  # the 3x3 conv after nearest upsampling
    return total + _conv(dims[-1], 3 * cfg.patch_size**2, 27, hw * frames)  # head


# ---- the report -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FlopsReport:
    model: str
    resolution: tuple[int, int]  # W, H in pixels
    tflops: float  # the assumed sustained TFLOP/s
    chunk_frames: int
    forwards_per_chunk: int
    dit: DiTFlops
    vae_frame: float  # steady-state decode of one latent frame
    vae_first_frame: float
    counted_dit_chunk: float | None = None  # FlopCounterMode, meta device
    counted_vae_frame: float | None = None

    @property
    def chunk_seconds(self) -> float:
        return self.chunk_frames * VAE_TEMPORAL_STRIDE / FPS

    @property
    def dit_chunk(self) -> float:
        return self.dit.chunk(self.forwards_per_chunk)

    @property
    def dit_rtf(self) -> float:
        return self.dit_chunk / (self.tflops * 1e12) / self.chunk_seconds

    @property
    def vae_rtf(self) -> float:
        return self.chunk_frames * self.vae_frame / (self.tflops * 1e12) / self.chunk_seconds

    def to_dict(self) -> dict:
        extra = {"dit_chunk": self.dit_chunk, "dit_rtf": self.dit_rtf, "vae_rtf": self.vae_rtf}
        return {**asdict(self), **extra, "paper_rtf": PAPER_RTF}

    def lines(self) -> list[str]:
        f, (w, h) = self.dit, self.resolution
        lines = [
            f"{self.model} at {w}x{h}, {self.forwards_per_chunk} DiT forwards per "
            f"{self.chunk_seconds:.2f} s chunk, {self.tflops:g} TFLOP/s sustained",
            f"DiT forward: {_fmt(f.forward)} (linear {_fmt(f.linear)}, self-attention "
            f"{_fmt(f.self_attention)}, cross-attention {_fmt(f.cross_attention)}, audio "
            f"{_fmt(f.audio)}, patch/head/time {_fmt(f.embed)}); per chunk "
            f"{_fmt(self.dit_chunk)} with the audio projections ({_fmt(f.audio_projection)})",
            f"VAE decode: {_fmt(self.vae_frame)} per latent frame, first frame "
            f"{_fmt(self.vae_first_frame)}",
            f"implied RTF: DiT {self.dit_rtf:.3g} (paper, H800: {PAPER_RTF['dit']}), "
            f"VAE {self.vae_rtf:.3g} (paper: {PAPER_RTF['vae']})",
        ]
        for name, analytic, counted in (
            ("DiT chunk", self.dit_chunk, self.counted_dit_chunk),
            ("VAE frame", self.vae_frame, self.counted_vae_frame),
        ):
            if counted is not None:
                lines.append(
                    f"check {name}: FlopCounterMode {_fmt(counted)} vs analytic "
                    f"{_fmt(analytic)} ({100 * (analytic / counted - 1):+.2f}%)"
                )
        return lines


def _fmt(flops: float) -> str:
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if flops >= scale:
            return f"{flops / scale:.2f} {unit}"
    return f"{flops:.0f} FLOP"


def flops_report(
    model: str = "wan2.2-ti2v-5b",
    resolution: tuple[int, int] = (928, 704),
    tflops: float = 400.0,
    stream: StreamConfig | None = None,
    check: bool = True,
) -> FlopsReport:
    """The analytic counts for a model preset at a W x H resolution; with `check`, also
    FlopCounterMode's counts of the same work on meta-device models."""
    from streamavatar_cli.config import MODEL_PRESETS

    if model not in MODEL_PRESETS:
        raise ValueError(f"unknown model preset {model!r}; available: {sorted(MODEL_PRESETS)}")
    preset, stream = MODEL_PRESETS[model], stream or StreamConfig()
    width, height = resolution
    stride = preset.pixel_stride
    if width % stride or height % stride:
        raise ValueError(f"resolution {width}x{height}: both sides must be multiples of {stride}")
    latent_hw = (height // preset.vae.spatial_stride, width // preset.vae.spatial_stride)
    tokens = (latent_hw[0] // preset.dit.patch_size[1]) * (latent_hw[1] // preset.dit.patch_size[2])
    key_frames = stream.sink_frames + stream.window_frames + stream.chunk_frames
    report = FlopsReport(
        model=model,
        resolution=resolution,
        tflops=tflops,
        chunk_frames=stream.chunk_frames,
        forwards_per_chunk=stream.steps + (stream.cache_update == "clean"),
        dit=dit_chunk_flops(preset.dit, tokens, stream.chunk_frames, key_frames),
        vae_frame=vae_decode_flops(preset.vae, latent_hw),
        vae_first_frame=vae_decode_flops(preset.vae, latent_hw, first=True),
    )
    if not check:
        return report
    from dataclasses import replace

    return replace(
        report,
        counted_dit_chunk=count_chunk(preset.dit, latent_hw, stream),
        counted_vae_frame=count_vae_frame(preset.vae, latent_hw),
    )


# ---- FlopCounterMode on meta-device models --------------------------------------------------


def count_chunk(cfg: DiTConfig, latent_hw: tuple[int, int], stream: StreamConfig) -> float:
    """FlopCounterMode's FLOPs of one steady-state chunk (sink and window full), with audio:
    the streaming generator itself, run on a meta-device model."""
    from torch.utils.flop_counter import FlopCounterMode

    from streamavatar_cli.models import WanDiT
    from streamavatar_cli.pipeline.stream import StreamingGenerator

    with torch.device("meta"):
        dit = WanDiT(cfg).eval().requires_grad_(False)
        audio = torch.zeros(
            1,
            stream.chunk_frames,
            cfg.audio_window,
            cfg.audio_feature_layers,
            cfg.audio_feature_dim,
        )
    generator = StreamingGenerator(dit, stream)
    generator.start(torch.zeros(1, cfg.in_dim, 1, *latent_hw, device="meta"))
    full = stream.sink_frames + stream.window_frames  # the first chunk starting here sees all
    for _ in range(math.ceil((full - 1) / stream.chunk_frames)):
        generator.next_chunk(audio, audio)
    with FlopCounterMode(display=False) as counter:
        generator.next_chunk(audio, audio)
    return counter.get_total_flops()


def count_vae_frame(cfg: VAEConfig, latent_hw: tuple[int, int]) -> float:
    """FlopCounterMode's FLOPs of the streaming decode of a second latent frame (steady state)."""
    from torch.utils.flop_counter import FlopCounterMode

    from streamavatar_cli.models import WanVAE

    with torch.device("meta"):
        vae = WanVAE(cfg).eval()
        latent = torch.zeros(1, cfg.z_dim, 1, *latent_hw)
    decoder = vae.stream_decoder()
    decoder.decode(latent)
    with FlopCounterMode(display=False) as counter:
        decoder.decode(latent)
    return counter.get_total_flops()

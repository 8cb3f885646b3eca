"""The Wan2.2-TI2V DiT with StreamAvatar's talk and listen audio modules.

Reads top to bottom: norms -> time embedding -> attention modules -> block -> model.
Parameter names are the official Wan names (`blocks.N.self_attn.q`, `blocks.N.norm3`, ...) so
the official checkpoint loads without renaming; the new modules live under
`blocks.N.audio_attn`, `blocks.N.listen_attn`, `audio_proj`, `listen_proj`.

Numerics follow the official model: time embedding, modulation and head in fp32, LayerNorms in
fp32, the residual stream kept in fp32; linear layers and attention run in the parameter dtype.
Shapes: B batch, F latent frames, S = h * w tokens per frame (patch grid), L = F * S tokens,
D model dim, H heads, d head dim.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from streamavatar_cli.config import DiTConfig
from streamavatar_cli.models.attention import Attention, GlobalAttention, sdpa
from streamavatar_cli.models.audio_proj import AudioProjection

log = logging.getLogger(__name__)

# Parameters kept in fp32 whatever dtype the model runs in (official: these run under fp32).
FP32_PARAM_PATTERNS = ("time_embedding.", "time_projection.", "modulation")


def is_fp32_param(name: str) -> bool:
    return any(p in name for p in FP32_PARAM_PATTERNS)


AUDIO_PARAM_PREFIXES = ("audio_proj.", "listen_proj.")
AUDIO_PARAM_INFIXES = (".audio_attn.", ".listen_attn.")


def is_audio_param(name: str) -> bool:
    """True for the StreamAvatar audio modules (absent from a base Wan checkpoint)."""
    return name.startswith(AUDIO_PARAM_PREFIXES) or any(p in name for p in AUDIO_PARAM_INFIXES)


class RMSNorm(nn.Module):
    """RMS norm over the whole model dim (Wan's q/k norm "across heads"), in fp32."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x32 * self.weight.float()).type_as(x)


def layer_norm32(x: torch.Tensor, eps: float, norm: nn.LayerNorm | None = None) -> torch.Tensor:
    """LayerNorm computed in fp32 (affine if `norm` is given), returned in fp32."""
    if norm is None:
        return F.layer_norm(x.float(), (x.shape[-1],), eps=eps)
    return F.layer_norm(x.float(), (x.shape[-1],), norm.weight.float(), norm.bias.float(), eps)


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """[N] timesteps -> [N, dim] as [cos, sin] with frequencies 10000^(-j / (dim/2)), in fp64."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    angles = t.to(torch.float64)[:, None] * freqs[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=-1).float()


def _heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """[B, L, D] -> [B, H, L, d]."""
    return x.unflatten(-1, (n_heads, -1)).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, H, L, d] -> [B, L, D]."""
    return x.transpose(1, 2).flatten(2)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int, eps: float):
        super().__init__()
        self.n_heads = n_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = RMSNorm(dim, eps), RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, attn: Callable) -> torch.Tensor:
        """x [B, L, D] in the parameter dtype; `attn(q, k, v)` sees un-rotated [B, H, L, d]."""
        q = _heads(self.norm_q(self.q(x)), self.n_heads)
        k = _heads(self.norm_k(self.k(x)), self.n_heads)
        v = _heads(self.v(x), self.n_heads)
        return self.o(_merge_heads(attn(q, k, v)))


class CrossAttention(nn.Module):
    """Text cross-attention. K/V depend only on the prompt, so `kv` is computed once per job."""

    def __init__(self, dim: int, n_heads: int, eps: float, context_dim: int | None = None):
        super().__init__()
        self.n_heads = n_heads
        context_dim = context_dim or dim
        self.q, self.o = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.k, self.v = nn.Linear(context_dim, dim), nn.Linear(context_dim, dim)
        self.norm_q, self.norm_k = RMSNorm(dim, eps), RMSNorm(dim, eps)

    def kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """context [B, Lc, Dc] -> (k, v) each [B, H, Lc, d]."""
        return _heads(self.norm_k(self.k(context)), self.n_heads), _heads(
            self.v(context), self.n_heads
        )

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        q = _heads(self.norm_q(self.q(x)), self.n_heads)
        return self.o(_merge_heads(sdpa(q, *kv)))


class AudioAttention(CrossAttention):
    """Frame-local audio cross-attention (paper Fig. 4): frame k's tokens see frame k's audio.

    norm -> q from video tokens, k/v from audio tokens -> zero-initialised output projection, so
    a freshly extended base model computes exactly the base Wan output.
    """

    def __init__(self, dim: int, n_heads: int, eps: float, audio_dim: int):
        super().__init__(dim, n_heads, eps, context_dim=audio_dim)
        self.eps = eps
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.reset_output_()

    def reset_output_(self) -> None:
        nn.init.zeros_(self.o.weight)
        nn.init.zeros_(self.o.bias)

    def update(self, x: torch.Tensor, audio: torch.Tensor, n_frames: int) -> torch.Tensor:
        """x [B, L, D] fp32 residual; audio [B, Fa, T, Da] for the LAST Fa of the n_frames.

        Returns the residual update [B, L, D]; frames without audio (the reference) get zero.
        """
        B, L, D = x.shape
        n_audio = audio.shape[1]
        per_frame = L // n_frames
        dtype = self.q.weight.dtype
        h = layer_norm32(x[:, (n_frames - n_audio) * per_frame :], self.eps, self.norm).to(dtype)
        h = h.reshape(B * n_audio, per_frame, D)  # one attention problem per frame
        kv = self.kv(audio.to(dtype).flatten(0, 1))  # [B*Fa, H, T, d]
        update = self(h, kv).reshape(B, n_audio * per_frame, D).float()
        return F.pad(update, (0, 0, L - update.shape[1], 0))


class WanBlock(nn.Module):
    """Self-attn (modulated, gated) -> text cross-attn -> talk audio -> listen audio -> FFN."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        dim, eps = cfg.dim, cfg.eps
        self.eps = eps
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)
        self.self_attn = SelfAttention(dim, cfg.num_heads, eps)
        self.norm3 = nn.LayerNorm(dim, eps=eps)  # official name: the cross-attention norm
        self.cross_attn = CrossAttention(dim, cfg.num_heads, eps)
        self.audio_attn = AudioAttention(dim, cfg.num_heads, eps, cfg.audio_context_dim)
        self.listen_attn = AudioAttention(dim, cfg.num_heads, eps, cfg.audio_context_dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, dim)
        )

    def forward(
        self,
        x: torch.Tensor,
        e0: torch.Tensor,
        text_kv: tuple[torch.Tensor, torch.Tensor],
        talk: torch.Tensor | None,
        listen: torch.Tensor | None,
        attn: Callable,
    ) -> torch.Tensor:
        """x [B, L, D] fp32; e0 [B, F, 6, D] fp32 per-frame time projection."""
        B, L, D = x.shape
        n_frames = e0.shape[1]
        dtype = self.ffn[0].weight.dtype
        mod = (self.modulation.float().unsqueeze(0) + e0).unsqueeze(3)  # [B, F, 6, 1, D]
        shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = mod.unbind(2)

        def per_frame(t: torch.Tensor) -> torch.Tensor:  # [B, L, D] <-> [B, F, S, D]
            return t.view(B, n_frames, L // n_frames, D)

        h = per_frame(layer_norm32(x, self.eps)) * (1 + scale_sa) + shift_sa
        y = self.self_attn(h.view(B, L, D).to(dtype), attn)
        x = (per_frame(x) + per_frame(y.float()) * gate_sa).view(B, L, D)

        h = layer_norm32(x, self.eps, self.norm3).to(dtype)
        x = x + self.cross_attn(h, text_kv).float()
        if talk is not None:
            x = x + self.audio_attn.update(x, talk, n_frames)
        if listen is not None:
            x = x + self.listen_attn.update(x, listen, n_frames)

        h = per_frame(layer_norm32(x, self.eps)) * (1 + scale_ff) + shift_ff
        y = self.ffn(h.view(B, L, D).to(dtype))
        return (per_frame(x) + per_frame(y.float()) * gate_ff).view(B, L, D)


class Head(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.eps = cfg.eps
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)
        self.head = nn.Linear(cfg.dim, cfg.out_dim * math.prod(cfg.patch_size))

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """x [B, L, D], e [B, F, D] (time embedding before projection) -> [B, L, out*patch]."""
        B, L, D = x.shape
        n_frames = e.shape[1]
        shift, scale = (
            (self.modulation.float().unsqueeze(0) + e.unsqueeze(2)).unsqueeze(3).unbind(2)
        )
        h = layer_norm32(x, self.eps).view(B, n_frames, L // n_frames, D) * (1 + scale) + shift
        return F.linear(h.view(B, L, D), self.head.weight.float(), self.head.bias.float())


class WanDiT(nn.Module):
    """Wan2.2-TI2V DiT + StreamAvatar audio modules. `forward` is the bidirectional form;
    pass another `attention` strategy (see `attention.py`, `kv_cache.py`) for the others."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        cfg = self.config = config.validate()
        dim = cfg.dim
        self.patch_embedding = nn.Conv3d(cfg.in_dim, dim, cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(
            nn.Linear(cfg.text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim)
        )
        self.time_embedding = nn.Sequential(
            nn.Linear(cfg.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim)
        )
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList(WanBlock(cfg) for _ in range(cfg.num_layers))
        self.head = Head(cfg)
        self.audio_proj = AudioProjection(cfg)
        self.listen_proj = AudioProjection(cfg)
        # The fixed prompt's umT5 embedding (real rows, then zero rows): no text encoder at render.
        self.register_buffer("prompt_context", torch.zeros(cfg.text_len, cfg.text_dim))
        self.gradient_checkpointing = False  # set by `streamavatar train` ([run] switch)

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embedding.weight.dtype

    def audio_modules(self) -> list[nn.Module]:
        return [self.audio_proj, self.listen_proj] + [
            m for block in self.blocks for m in (block.audio_attn, block.listen_attn)
        ]

    def init_audio_modules_(self) -> None:
        """Fresh init of the audio modules (zero output projections): the base model's output."""
        for module in self.audio_modules():
            for sub in module.modules():
                if isinstance(sub, RMSNorm):
                    nn.init.ones_(sub.weight)
                elif isinstance(sub, (nn.Linear, nn.LayerNorm)):
                    sub.reset_parameters()
            if isinstance(module, AudioAttention):
                module.reset_output_()

    @property
    def device(self) -> torch.device:
        return self.patch_embedding.weight.device

    # ---- pieces the streaming generator calls directly -------------------------------------

    def text_kv(
        self, context: torch.Tensor | None = None, batch: int = 1
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer cross-attention K/V of the text context; constant for a whole job.

        context [B, Lc, text_dim] with Lc <= text_len is zero-padded to text_len rows like the
        official model (the padded rows are attended to and change the output); None uses the
        stored `prompt_context`.
        """
        cfg = self.config
        if context is None:
            context = self.prompt_context.unsqueeze(0).expand(batch, -1, -1)
        if context.shape[1] > cfg.text_len or context.shape[-1] != cfg.text_dim:
            raise ValueError(
                f"text context {tuple(context.shape)} must be [B, <= {cfg.text_len}, {cfg.text_dim}]"
            )
        context = F.pad(context, (0, 0, 0, cfg.text_len - context.shape[1]))
        embedded = self.text_embedding(context.to(self.dtype))
        return [block.cross_attn.kv(embedded) for block in self.blocks]

    def time_embed(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """t [B, F] in [0, 1000] -> e [B, F, D] and e0 [B, F, 6, D], both fp32."""
        B, n_frames = t.shape
        sinus = sinusoidal_embedding(t.reshape(-1), self.config.freq_dim)
        e = _linear32_seq(self.time_embedding, sinus)
        e0 = _linear32_seq(self.time_projection, e)
        return e.view(B, n_frames, -1), e0.view(B, n_frames, 6, -1)

    def audio_tokens(self, talk_audio: torch.Tensor | None, listen_audio: torch.Tensor | None):
        """Windowed features [B, Fa, window, layers, dim] -> tokens [B, Fa, T, Da] (or None)."""
        talk = self.audio_proj(talk_audio) if talk_audio is not None else None
        listen = self.listen_proj(listen_audio) if listen_audio is not None else None
        return talk, listen

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, F, H, W] latents -> [B, L, D] fp32 tokens in (f, h, w) order."""
        return self.patch_embedding(x.to(self.dtype)).flatten(2).transpose(1, 2).float()

    def unpatchify(self, y: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """[B, L, out * pt * ph * pw] -> [B, out, F, H, W] float32."""
        n_frames, h, w = grid
        _, ph, pw = self.config.patch_size
        y = y.view(y.shape[0], n_frames, h, w, ph, pw, self.config.out_dim)
        return y.permute(0, 6, 1, 2, 4, 3, 5).reshape(y.shape[0], -1, n_frames, h * ph, w * pw)

    def run_blocks(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        text_kv: list[tuple[torch.Tensor, torch.Tensor]],
        talk: torch.Tensor | None,
        listen: torch.Tensor | None,
        attention: Attention,
        grid: tuple[int, int, int],
    ) -> torch.Tensor:
        """Latents -> flow prediction with given text K/V, audio tokens and attention strategy."""
        e, e0 = self.time_embed(t)
        tokens = self.block_tokens(self.patchify(x), e0, text_kv, talk, listen, attention)[-1]
        return self.unpatchify(self.head(tokens, e), grid)

    def block_tokens(
        self,
        tokens: torch.Tensor,
        e0: torch.Tensor,
        text_kv: list[tuple[torch.Tensor, torch.Tensor]],
        talk: torch.Tensor | None,
        listen: torch.Tensor | None,
        attention: Attention,
        taps: tuple[int, ...] = (),
    ) -> list[torch.Tensor]:
        """Run the blocks on patch tokens [B, L, D]; -> the outputs of the blocks in `taps`
        (the refine stage's discriminator reads intermediate layers), then the last block's."""
        checkpointed = self.gradient_checkpointing and torch.is_grad_enabled()
        tapped = []
        for i, block in enumerate(self.blocks):
            args = (tokens, e0, text_kv[i], talk, listen, _bind_layer(attention, i))
            if checkpointed:  # training: recompute the block in backward instead of storing it
                tokens = torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False)
            else:
                tokens = block(*args)
            if i in taps:
                tapped.append(tokens)
        return tapped + [tokens]

    # ---- the public bidirectional forward -------------------------------------------------

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor | None = None,
        talk_audio: torch.Tensor | None = None,
        listen_audio: torch.Tensor | None = None,
        *,
        attention: Attention | None = None,
    ) -> torch.Tensor:
        """Flow prediction v for latents x [B, C, F, H, W] at per-frame timesteps t [B, F].

        `talk_audio`/`listen_audio`: windowed features [B, Fa, window, layers, dim] for the last
        Fa latent frames (Fa < F leaves the leading frames, e.g. the reference, without audio).
        `attention` defaults to full bidirectional attention at positions 0..F-1.
        """
        B, _, n_frames, height, width = x.shape
        grid = self.grid(x)
        t = self._frame_timesteps(t, B, n_frames)
        for name, audio in (("talk_audio", talk_audio), ("listen_audio", listen_audio)):
            if audio is not None and (audio.shape[0] != B or audio.shape[1] > n_frames):
                raise ValueError(
                    f"{name} {tuple(audio.shape)} must be [B={B}, <= F={n_frames}, ...]"
                )
        if attention is None:
            cfg = self.config
            attention = GlobalAttention.for_grid(
                range(n_frames), grid[1], grid[2], cfg.head_dim, cfg.rope_theta, x.device
            )
        talk, listen = self.audio_tokens(talk_audio, listen_audio)
        return self.run_blocks(x, t, self.text_kv(context, B), talk, listen, attention, grid)

    def grid(self, x: torch.Tensor) -> tuple[int, int, int]:
        _, ph, pw = self.config.patch_size
        _, channels, n_frames, height, width = x.shape
        if channels != self.config.in_dim or height % ph or width % pw:
            raise ValueError(
                f"latents {tuple(x.shape)}: need {self.config.in_dim} channels and H, W "
                f"divisible by the patch ({ph}, {pw})"
            )
        return n_frames, height // ph, width // pw

    @staticmethod
    def _frame_timesteps(t: torch.Tensor, batch: int, n_frames: int) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float32)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.ndim == 1:
            t = t[:, None].expand(batch, n_frames)
        if t.shape != (batch, n_frames):
            raise ValueError(f"timesteps {tuple(t.shape)} must be [B={batch}, F={n_frames}]")
        return t


def _bind_layer(attention: Attention, layer: int) -> Callable:
    return functools.partial(_attend, attention, layer)


@torch.compiler.disable
def _attend(
    attention: Attention, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """The attention strategy, kept out of `torch.compile`: it holds per-chunk Python state
    (frames, cache slots, the write flag) that compiled code would re-specialise on every chunk."""
    return attention(layer, q, k, v)


def _linear32_seq(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Run a Linear/activation stack in fp32 whatever the stored dtype or an enclosing bf16
    autocast (official: fp32 autocast)."""
    device = x.device.type
    off = (
        torch.autocast(device, enabled=False)
        if torch.amp.is_autocast_available(device)
        else nullcontext()
    )
    with off:
        for layer in seq:
            x = (
                F.linear(x, layer.weight.float(), layer.bias.float())
                if isinstance(layer, nn.Linear)
                else layer(x)
            )
    return x


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(backbone parameters, audio-module parameters)."""
    backbone = audio = 0
    for name, p in model.named_parameters():
        if is_audio_param(name):
            audio += p.numel()
        else:
            backbone += p.numel()
    return backbone, audio


def compile_blocks(model: WanDiT) -> WanDiT:
    """Opt-in `torch.compile` of every block, in place; the attention strategies stay eager.

    Compiling is a speed-up, never a new way to fail: a block whose compiled call raises (no C++
    compiler, an unsupported device or op) warns once and runs eagerly from then on. Worth it on
    GPUs; on a CPU it can be slower (docs/benchmarks.md).
    """
    for block in model.blocks:
        if not isinstance(block.forward, _CompiledOrEager):
            block.forward = _CompiledOrEager(block.forward)
    return model


class _CompiledOrEager:
    def __init__(self, forward: Callable):
        self.eager = forward
        self.compiled: Callable | None = torch.compile(forward)

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - whatever broke, the eager path still works
                reason = (str(e).strip().splitlines() or [""])[0]
                log.warning(
                    "torch.compile failed (%s: %s); running eagerly", type(e).__name__, reason
                )
                self.compiled = None
        return self.eager(*args, **kwargs)

"""The Wan2.2 residual causal 3-D VAE: 4x time, 16x space, normalised latents.

Reads top to bottom: feature cache -> norm and causal conv -> blocks -> encoder -> decoder ->
model -> streaming decoder. Parameter names are the official `WanVAE_` names
(`wan/modules/vae2_2.py`: `encoder.downsamples.N.downsamples.M.residual.0.gamma`, `conv1`,
`decoder.upsamples.N...`), so `Wan2.2_VAE.pth` loads without renaming; `vae_io.py` maps the
diffusers layout onto them.

Every temporal conv is causal. Encoding runs frame 0 alone, then 4 frames per step; decoding
runs one latent frame per step. A `FeatureCache` carries each temporal conv's last input frames
from step to step, which is why a streamed decode equals a one-shot decode and why the decoder
state stays bounded however long the stream. Shapes: B batch, C channels, T frames, H x W
pixels; latents are [B, z, n, h, w].
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from streamavatar_cli.config import VAEConfig

CACHE_T = 2
"""Past frames a kernel-3 causal conv needs from the previous step."""


class FeatureCache:
    """Per-step carry of every temporal layer's last input frames, visited in call order.

    A step starts with `rewind()`; each cached layer reads its slot with `peek()` (None on the
    stream's first step) and stores its new state with `put()`, which moves to the next slot.
    The slots are fixed after the first step, so memory does not grow with the stream.
    """

    def __init__(self) -> None:
        self._slots: list[torch.Tensor] = []
        self._cursor = 0

    @property
    def started(self) -> bool:
        return bool(self._slots)

    @property
    def nbytes(self) -> int:
        return sum(s.numel() * s.element_size() for s in self._slots)

    def reset(self) -> None:
        self._slots.clear()
        self._cursor = 0

    def rewind(self) -> None:
        self._cursor = 0

    def peek(self) -> torch.Tensor | None:
        return self._slots[self._cursor] if self._cursor < len(self._slots) else None

    def put(self, state: torch.Tensor) -> None:
        if self._cursor < len(self._slots):
            self._slots[self._cursor] = state
        else:
            self._slots.append(state)
        self._cursor += 1


def _fold_time(x: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] -> [B*T, C, H, W], for the per-frame 2-D layers."""
    b, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(b * t, c, h, w)


def _unfold_time(x: torch.Tensor, batch: int) -> torch.Tensor:
    """[B*T, C, H, W] -> [B, C, T, H, W]."""
    return x.view(batch, -1, *x.shape[1:]).transpose(1, 2)


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, T, H, W] -> [B, C*p*p, T, H/p, W/p], channel c*p*p + r*p + q (r: w offset, q: h offset).

    The official channel order; `unpatchify` is its inverse.
    """
    if p == 1:
        return x
    b, c, t, h, w = x.shape
    x = x.view(b, c, t, h // p, p, w // p, p)  # b c t h q w r
    return x.permute(0, 1, 6, 4, 2, 3, 5).reshape(b, c * p * p, t, h // p, w // p)


def unpatchify(x: torch.Tensor, p: int) -> torch.Tensor:
    if p == 1:
        return x
    b, cpp, t, h, w = x.shape
    x = x.view(b, cpp // (p * p), p, p, t, h, w)  # b c r q t h w
    return x.permute(0, 1, 4, 5, 3, 6, 2).reshape(b, cpp // (p * p), t, h * p, w * p)


class RMSNorm(nn.Module):
    """Unit L2 norm over channels times sqrt(C) times gamma (official `RMS_norm`, no bias).

    `images` selects the gamma shape the checkpoint has: [C, 1, 1] for per-frame 2-D input,
    [C, 1, 1, 1] for video. The norm is taken in fp32 so bf16 runs stay close to fp32.
    """

    def __init__(self, dim: int, images: bool = False) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, *((1, 1) if images else (1, 1, 1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        # = 1 / max(||x||, 1e-12) as in F.normalize, whose norm kernel is ~30x slower on CPU.
        inv_norm = torch.rsqrt(x32.square().sum(dim=1, keepdim=True).clamp_min(1e-24))
        return (x32 * inv_norm).to(x.dtype) * self.scale * self.gamma


def _onednn_ok(x: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and hasattr(torch, "mkldnn_convolution")  # not a public op: absent in some builds
    )


class CausalConv3d(nn.Conv3d):
    """Conv3d padded only towards the past in time; the past is the previous step's tail.

    The first step pads with zeros; later steps prepend the last `CACHE_T` input frames of
    the previous step (official `CausalConv3d` with its feature cache).
    """

    def __init__(self, in_dim: int, out_dim: int, kernel: tuple[int, int, int] = (3, 3, 3)):
        super().__init__(in_dim, out_dim, kernel)
        kt, kh, kw = kernel
        self._time_pad = kt - 1
        self._space_pad = (kw // 2, kw // 2, kh // 2, kh // 2)

    def forward(self, x: torch.Tensor, cache: FeatureCache) -> torch.Tensor:
        past = cache.peek()
        n_past = 0 if past is None else past.shape[2]
        if past is not None:
            x = torch.cat([past, x], dim=2)
        cache.put(x[:, :, -CACHE_T:].clone())
        x = F.pad(x, (*self._space_pad, self._time_pad - n_past, 0))
        if _onednn_ok(x):
            # PyTorch picks oneDNN for a CPU conv3d only above a size threshold; below it (batch
            # 1, small widths: the tiny VAE) its fallback is up to 10x slower. Same convolution.
            ones = [1, 1, 1]
            return torch.mkldnn_convolution(x, self.weight, self.bias, [0, 0, 0], ones, ones, 1)
        return super().forward(x)


class ResidualBlock(nn.Module):
    """Two norm-SiLU-causal-conv layers plus a shortcut (a 1x1x1 conv when widths change)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        # Official slot layout (checkpoint indices): norm, act, conv, norm, act, dropout, conv.
        # Dropout is 0 in every released config, so slot 5 is an Identity.
        self.residual = nn.Sequential(
            RMSNorm(in_dim),
            nn.SiLU(),
            CausalConv3d(in_dim, out_dim),
            RMSNorm(out_dim),
            nn.SiLU(),
            nn.Identity(),
            CausalConv3d(out_dim, out_dim),
        )
        self.shortcut = nn.Conv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: FeatureCache) -> torch.Tensor:
        norm1, act1, conv1, norm2, act2, _, conv2 = self.residual
        h = conv1(act1(norm1(x)), cache)
        h = conv2(act2(norm2(h)), cache)
        return h + self.shortcut(x)


class AttentionBlock(nn.Module):
    """Single-head self-attention over the H*W positions of each frame on its own."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, _, h, w = x.shape
        y = _fold_time(x)
        qkv = self.to_qkv(self.norm(y)).flatten(2).transpose(1, 2)  # [B*T, H*W, 3C]
        q, k, v = qkv.unsqueeze(1).chunk(3, dim=-1)  # [B*T, 1, H*W, C] each
        y = F.scaled_dot_product_attention(q, k, v)
        y = y.squeeze(1).transpose(1, 2).reshape(-1, c, h, w)
        return x + _unfold_time(self.proj(y), b)


class Middle(nn.Sequential):
    """Residual, per-frame attention, residual (official `middle.0/1/2`)."""

    def __init__(self, dim: int) -> None:
        super().__init__(ResidualBlock(dim, dim), AttentionBlock(dim), ResidualBlock(dim, dim))

    def forward(self, x: torch.Tensor, cache: FeatureCache) -> torch.Tensor:
        first, attention, second = self
        return second(attention(first(x, cache)), cache)


class Head(nn.Sequential):
    """Norm, SiLU, causal conv to the output channels (official `head.0/1/2`)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__(RMSNorm(in_dim), nn.SiLU(), CausalConv3d(in_dim, out_dim))

    def forward(self, x: torch.Tensor, cache: FeatureCache) -> torch.Tensor:
        norm, act, conv = self
        return conv(act(norm(x)), cache)


ResampleMode = Literal["downsample2d", "downsample3d", "upsample2d", "upsample3d"]


class Resample(nn.Module):
    """x2 down/up-sampling in space by per-frame 2-D convs, "3d" modes also x2 in time."""

    def __init__(self, dim: int, mode: ResampleMode) -> None:
        super().__init__()
        self.mode = mode
        if mode.startswith("down"):
            # Pad right/bottom only: stride-2 windows start at the top-left pixel.
            self.resample = nn.Sequential(
                nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2)
            )
        else:
            self.resample = nn.Sequential(
                nn.Upsample(scale_factor=2.0, mode="nearest-exact"),
                nn.Conv2d(dim, dim, 3, padding=1),
            )
        if mode == "downsample3d":
            self.time_conv = nn.Conv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))
        elif mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1))

    def forward(self, x: torch.Tensor, cache: FeatureCache) -> torch.Tensor:
        if self.mode == "upsample3d":
            x = self._double_time(x, cache)
        x = _unfold_time(self.resample(_fold_time(x)), x.shape[0])
        if self.mode == "downsample3d":
            x = self._halve_time(x, cache)
        return x

    def _double_time(self, x: torch.Tensor, cache: FeatureCache) -> torch.Tensor:
        """Each frame becomes two (the channel halves of `time_conv`), except the stream's first.

        The first latent frame stays one frame and `time_conv` never sees it: its next step
        starts from zero padding (the official "Rep" marker), here an empty cached state.
        """
        if cache.peek() is None:
            b, c, _, h, w = x.shape
            cache.put(x.new_empty(b, c, 0, h, w))
            return x
        b, c, t, h, w = x.shape
        y = self.time_conv(x, cache)  # [B, 2C, T, H, W]
        return y.view(b, 2, c, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * t, h, w)

    def _halve_time(self, x: torch.Tensor, cache: FeatureCache) -> torch.Tensor:
        """Stride-2 conv over [last frame of the previous step, this step's frames].

        The first step (frame 0 alone) passes through, so 1 + 4k frames give 1 + k latents.
        """
        past = cache.peek()
        cache.put(x[:, :, -1:].clone())
        if past is None:
            return x
        return self.time_conv(torch.cat([past, x], dim=2))


def avg_down(x: torch.Tensor, out_dim: int, ft: int, fs: int) -> torch.Tensor:
    """Parameter-free shortcut of a down block: fold (ft, fs, fs) cells into channels, then
    average groups of channels down to `out_dim`. Time is front-padded to a multiple of ft."""
    x = F.pad(x, (0, 0, 0, 0, (-x.shape[2]) % ft, 0))
    b, c, t, h, w = x.shape
    x = x.view(b, c, t // ft, ft, h // fs, fs, w // fs, fs).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, out_dim, -1, t // ft, h // fs, w // fs).mean(dim=2)


def dup_up(x: torch.Tensor, out_dim: int, ft: int, fs: int, first: bool) -> torch.Tensor:
    """Parameter-free shortcut of an up block: repeat channels, unfold them into (ft, fs, fs)
    cells. On the stream's first frame the main path does not double time, so drop ft - 1."""
    b, c, t, h, w = x.shape
    x = x.repeat_interleave(out_dim * ft * fs * fs // c, dim=1)
    x = x.view(b, out_dim, ft, fs, fs, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    x = x.reshape(b, out_dim, t * ft, h * fs, w * fs)
    return x[:, :, ft - 1 :] if first else x


def _check_groups(kind: str, small: int, big: int, factor: int) -> None:
    if (small * factor) % big:
        raise ValueError(
            f"{kind} shortcut: {small} channels x {factor} cells is not a multiple of {big}; "
            "choose base_dim/decoder_base_dim/dim_mult so the widths divide"
        )


class DownBlock(nn.Module):
    """Residual blocks, then x2 downsampling, plus an `avg_down` shortcut (`Down_ResidualBlock`)."""

    def __init__(self, in_dim: int, out_dim: int, n_res: int, space: bool, time: bool) -> None:
        super().__init__()
        self.out_dim, self.ft, self.fs = out_dim, 2 if time else 1, 2 if space else 1
        _check_groups("encoder", in_dim, out_dim, self.ft * self.fs**2)
        layers: list[nn.Module] = [
            ResidualBlock(in_dim if i == 0 else out_dim, out_dim) for i in range(n_res)
        ]
        if space:
            layers.append(Resample(out_dim, "downsample3d" if time else "downsample2d"))
        self.downsamples = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, cache: FeatureCache) -> torch.Tensor:
        shortcut = avg_down(x, self.out_dim, self.ft, self.fs)
        for layer in self.downsamples:
            x = layer(x, cache)
        return x + shortcut


class UpBlock(nn.Module):
    """Residual blocks, then x2 upsampling, plus a `dup_up` shortcut (`Up_ResidualBlock`)."""

    def __init__(self, in_dim: int, out_dim: int, n_res: int, space: bool, time: bool) -> None:
        super().__init__()
        self.out_dim, self.ft, self.fs, self.space = out_dim, 2 if time else 1, 2, space
        if space:
            _check_groups("decoder", out_dim, in_dim, self.ft * self.fs**2)
        layers: list[nn.Module] = [
            ResidualBlock(in_dim if i == 0 else out_dim, out_dim) for i in range(n_res)
        ]
        if space:
            layers.append(Resample(out_dim, "upsample3d" if time else "upsample2d"))
        self.upsamples = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, cache: FeatureCache, first: bool) -> torch.Tensor:
        y = x
        for layer in self.upsamples:
            y = layer(y, cache)
        if not self.space:
            return y
        return y + dup_up(x, self.out_dim, self.ft, self.fs, first)


class Encoder(nn.Module):
    """Patchified video -> [mu, log_var] features (official `Encoder3d`)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        dims = [config.base_dim * m for m in (1, *config.dim_mult)]
        last = len(config.dim_mult) - 1
        self.conv1 = CausalConv3d(3 * config.patch_size**2, dims[0])
        self.downsamples = nn.Sequential(
            *(
                DownBlock(
                    dims[i],
                    dims[i + 1],
                    config.num_res_blocks,
                    space=i != last,
                    time=i != last and bool(config.temporal_downsample[i]),
                )
                for i in range(last + 1)
            )
        )
        self.middle = Middle(dims[-1])
        self.head = Head(dims[-1], 2 * config.z_dim)

    def forward(self, x: torch.Tensor, cache: FeatureCache) -> torch.Tensor:
        x = self.conv1(x, cache)
        for block in self.downsamples:
            x = block(x, cache)
        return self.head(self.middle(x, cache), cache)


class Decoder(nn.Module):
    """Latents -> patchified video (official `Decoder3d`); widths mirror the encoder's."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        mult = config.dim_mult
        dims = [config.decoder_base_dim * m for m in (mult[-1], *reversed(mult))]
        up_time = tuple(reversed(config.temporal_downsample))
        last = len(mult) - 1
        self.conv1 = CausalConv3d(config.z_dim, dims[0])
        self.middle = Middle(dims[0])
        self.upsamples = nn.Sequential(
            *(
                UpBlock(
                    dims[i],
                    dims[i + 1],
                    config.num_res_blocks + 1,
                    space=i != last,
                    time=i != last and bool(up_time[i]),
                )
                for i in range(last + 1)
            )
        )
        self.head = Head(dims[-1], 3 * config.patch_size**2)

    def forward(self, x: torch.Tensor, cache: FeatureCache, first: bool) -> torch.Tensor:
        x = self.middle(self.conv1(x, cache), cache)
        for block in self.upsamples:
            x = block(x, cache, first)
        return self.head(x, cache)


class WanVAE(nn.Module):
    """Wan2.2 VAE with latent normalisation: the DiT sees (mu - mean) / std.

    Frozen at render time, so `encode`/`decode` run without autograd; the `vae` training stage
    uses `encode_moments` and `StreamingDecoder.decode_differentiable`.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config.validate()
        z = config.z_dim
        self.encoder = Encoder(config)
        self.conv1 = nn.Conv3d(2 * z, 2 * z, 1)  # -> (mu, log_var); only mu is used
        self.conv2 = nn.Conv3d(z, z, 1)
        self.decoder = Decoder(config)
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def latent_modules(self) -> tuple[nn.Module, nn.Module]:
        """What turns video into latents: the encoder and its moment projection. A decoder
        fine-tune freezes them; another VAE with the same weights here (and the same latent
        statistics) makes the same latents."""
        return self.encoder, self.conv1

    def _latent_stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """fp32 mean/std [1, z, 1, 1, 1] from the config: not buffers, so loading stays exact."""
        if device not in self._stats:
            mean = torch.tensor(self.config.latents_mean, device=device).view(1, -1, 1, 1, 1)
            std = torch.tensor(self.config.latents_std, device=device).view(1, -1, 1, 1, 1)
            self._stats[device] = (mean, std)
        return self._stats[device]

    def _like_params(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.conv2.weight
        return x.to(device=weight.device, dtype=weight.dtype)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """[B, 3, 1 + 4k, H, W] in [-1, 1] -> normalised latents [B, z, 1 + k, H/s, W/s]."""
        return self.encode_moments(video)[0]

    def encode_moments(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised posterior mean and log-variance of the raw latent; differentiable (the
        `vae` training stage). `encode` is this under no_grad, mean only."""
        stride, step = self.config.spatial_stride, self.config.temporal_stride
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"video must be [B, 3, F, H, W], got {tuple(video.shape)}")
        _, _, f, h, w = video.shape
        if f % step != 1:
            raise ValueError(f"video has {f} frames; the VAE needs 1 + {step}k frames")
        if h % stride or w % stride:
            raise ValueError(f"video is {w}x{h}; both sides must be multiples of {stride}")
        x = patchify(self._like_params(video), self.config.patch_size)
        cache = FeatureCache()
        features = []
        for start, end in [(0, 1)] + [(i, i + step) for i in range(1, f, step)]:
            cache.rewind()
            features.append(self.encoder(x[:, :, start:end], cache))
        mu, log_var = self.conv1(torch.cat(features, dim=2)).chunk(2, dim=1)
        mean, std = self._latent_stats(mu.device)
        return ((mu.float() - mean) / std).to(mu.dtype), log_var

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B, z, n, h, w] -> video [B, 3, 1 + 4(n-1), H, W] in [-1, 1]."""
        return self.stream_decoder().decode(latents)

    def stream_decoder(self) -> StreamingDecoder:
        return StreamingDecoder(self)


class StreamingDecoder:
    """Decodes a latent stream piece by piece with one persistent causal-conv cache.

    The stream's first latent frame gives 1 video frame, every later one 4; any split of the
    stream into calls gives the same frames as one call. `reset()` starts a new stream.
    """

    def __init__(self, vae: WanVAE) -> None:
        self.vae = vae
        self.cache = FeatureCache()

    def reset(self) -> None:
        self.cache.reset()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """[B, z, n, h, w] (n >= 1) -> [B, 3, m, H, W], m = 4n, or 4n - 3 for the first call."""
        return self.decode_differentiable(latents)

    def decode_differentiable(self, latents: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """`decode` with autograd (the `vae` training stage); `clamp` off keeps gradients of
        out-of-range pixels."""
        vae = self.vae
        if latents.ndim != 5 or latents.shape[1] != vae.config.z_dim or latents.shape[2] < 1:
            raise ValueError(
                f"latents must be [B, {vae.config.z_dim}, n >= 1, h, w], got {tuple(latents.shape)}"
            )
        z = vae._like_params(latents)
        mean, std = vae._latent_stats(z.device)
        z = vae.conv2((z.float() * std + mean).to(z.dtype))
        frames = []
        for i in range(z.shape[2]):
            first = not self.cache.started
            self.cache.rewind()
            frames.append(vae.decoder(z[:, :, i : i + 1], self.cache, first))
        video = unpatchify(torch.cat(frames, dim=2), vae.config.patch_size)
        return video.clamp(-1.0, 1.0) if clamp else video

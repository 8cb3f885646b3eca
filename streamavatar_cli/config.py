"""Configuration dataclasses: model shapes, stream settings, and the checkpoint's config.json.

Every file-borne setting becomes one of these frozen dataclasses once, at the edge
(`ModelConfig.from_dict`), and is validated there. Unknown keys are errors, so a typo in a
config.json fails loudly instead of silently falling back to a default.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

T = TypeVar("T")

FPS = 25
"""Video frame rate. Fixed by the method (ARCHITECTURE section 3)."""

AUDIO_SAMPLE_RATE = 16_000
"""Sample rate of every waveform inside the tool (wav2vec2's native rate)."""

VAE_TEMPORAL_STRIDE = 4
"""One latent frame after the first decodes to 4 video frames, for every supported VAE."""

# Wan2.2 VAE latent normalisation (hard-coded in the official `Wan2_2_VAE`, diffusers
# `latents_mean` / `latents_std`). Model facts, not tunables.
WAN22_LATENTS_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)  # fmt: skip
WAN22_LATENTS_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)  # fmt: skip


def _from_dict(cls: type[T], data: dict[str, Any], where: str) -> T:
    """Build a dataclass from a JSON dict; unknown keys are an error that names them."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(known)}")
    kwargs = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            value = data[f.name]
            kwargs[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)


def _to_dict(obj: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(obj).items()}


# --------------------------------------------------------------------------------------
# DiT


@dataclass(frozen=True)
class AudioWindow:
    """The video frames one latent frame's audio window holds (ARCHITECTURE 5): its own 4
    frames, `past` frames before them and `lookahead` after them, `size` in all.

    The lookahead is what a live stream must wait for past a chunk's last frame; the frames
    before are memory. The default (8 = 2 + 4 + 2) centres the window on the latent. A
    listener's nod starts on the user's syllable and lasts 8-18 frames, so the latents that
    show its second half need more memory than that to see its cause.
    """

    size: int = 8
    lookahead: int = 2

    @property
    def past(self) -> int:
        return self.size - VAE_TEMPORAL_STRIDE - self.lookahead

    def validate(self) -> AudioWindow:
        if self.lookahead < 0 or self.past < 0:
            raise ValueError(
                f"audio window of {self.size} frames with lookahead {self.lookahead}: it holds "
                f"the latent's {VAE_TEMPORAL_STRIDE} frames, so 0 <= lookahead <= size - "
                f"{VAE_TEMPORAL_STRIDE}"
            )
        return self

    def first_frame(self, latent: int) -> int:
        """The window's first video frame for latent k >= 1 (covering frames 4k-3 .. 4k);
        may be negative (callers clamp)."""
        return VAE_TEMPORAL_STRIDE * latent - (VAE_TEMPORAL_STRIDE - 1) - self.past


DEFAULT_AUDIO_WINDOW = AudioWindow()


@dataclass(frozen=True)
class DiTConfig:
    """Shapes of the Wan2.2-TI2V DiT plus the two StreamAvatar audio modules.

    Backbone fields use the official Wan names (`dim`, `ffn_dim`, ...). The audio fields
    describe `audio_proj`/`listen_proj`: per latent frame a window of `audio_window`
    per-video-frame feature vectors of `audio_feature_layers` x `audio_feature_dim`
    is projected to `audio_tokens` tokens of width `audio_context_dim`. The window holds the
    latent's 4 frames, `audio_lookahead` frames after them and the rest before them
    (`audio_frames`).
    """

    dim: int = 3072
    ffn_dim: int = 14336
    num_heads: int = 24
    num_layers: int = 30
    in_dim: int = 48
    out_dim: int = 48
    freq_dim: int = 256
    text_dim: int = 4096
    text_len: int = 512
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    rope_theta: float = 10000.0
    audio_feature_dim: int = 768
    audio_feature_layers: int = 12
    audio_window: int = 8
    audio_lookahead: int = 2
    audio_tokens: int = 32
    audio_hidden_dim: int = 1024
    audio_context_dim: int = 768

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def audio_frames(self) -> AudioWindow:
        return AudioWindow(self.audio_window, self.audio_lookahead)

    def validate(self) -> DiTConfig:
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} must be divisible by num_heads={self.num_heads}")
        if self.head_dim % 2 or self.head_dim < 6:
            raise ValueError(f"head_dim={self.head_dim} must be even and >= 6 for 3-D RoPE")
        if len(self.patch_size) != 3 or self.patch_size[0] != 1:
            raise ValueError(f"patch_size={self.patch_size}: only (1, p, p) patches are supported")
        for name in ("ffn_dim", "num_layers", "in_dim", "out_dim", "freq_dim", "text_dim",
                     "text_len", "audio_feature_dim", "audio_feature_layers", "audio_window",
                     "audio_tokens", "audio_hidden_dim", "audio_context_dim"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.freq_dim % 2:
            raise ValueError(f"freq_dim={self.freq_dim} must be even")
        self.audio_frames.validate()
        return self

    @classmethod
    def preset(cls, name: str) -> DiTConfig:
        if name not in DIT_PRESETS:
            raise ValueError(f"unknown DiT preset {name!r}; available: {sorted(DIT_PRESETS)}")
        return DIT_PRESETS[name]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiTConfig:
        return _from_dict(cls, data, "dit config").validate()

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


DIT_PRESETS: dict[str, DiTConfig] = {
    "wan2.2-ti2v-5b": DiTConfig(),
    # A few layers and small dims: milliseconds per forward on a CPU. head_dim 16 keeps the
    # 3-D RoPE split non-trivial (t 8, h 4, w 4 channels).
    "tiny": DiTConfig(
        dim=64,
        ffn_dim=128,
        num_heads=4,
        num_layers=2,
        in_dim=16,
        out_dim=16,
        freq_dim=32,
        text_dim=32,
        text_len=16,
        audio_feature_dim=16,
        audio_feature_layers=2,
        audio_window=8,
        audio_tokens=4,
        audio_hidden_dim=32,
        audio_context_dim=32,
    ),
}


# --------------------------------------------------------------------------------------
# VAE


@dataclass(frozen=True)
class VAEConfig:
    """Shapes of the Wan2.2 residual causal VAE (official `WanVAE_` naming).

    Spatial stride = `patch_size` * 2 ** (len(dim_mult) - 1); temporal stride =
    2 ** sum(temporal_downsample), which must be 4 (ARCHITECTURE section 3).
    """

    z_dim: int = 48
    base_dim: int = 160
    decoder_base_dim: int = 256
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    patch_size: int = 2
    latents_mean: tuple[float, ...] = WAN22_LATENTS_MEAN
    latents_std: tuple[float, ...] = WAN22_LATENTS_STD

    @property
    def spatial_stride(self) -> int:
        return self.patch_size * 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_stride(self) -> int:
        return 2 ** sum(bool(t) for t in self.temporal_downsample)

    def validate(self) -> VAEConfig:
        if len(self.temporal_downsample) != len(self.dim_mult) - 1:
            raise ValueError(
                f"temporal_downsample has {len(self.temporal_downsample)} entries; "
                f"dim_mult {self.dim_mult} needs {len(self.dim_mult) - 1}"
            )
        if self.temporal_stride != VAE_TEMPORAL_STRIDE:
            raise ValueError(
                f"temporal stride {self.temporal_stride} is not supported; "
                f"temporal_downsample must compress time by {VAE_TEMPORAL_STRIDE}"
            )
        if len(self.latents_mean) != self.z_dim or len(self.latents_std) != self.z_dim:
            raise ValueError(f"latents_mean/latents_std must have z_dim={self.z_dim} entries")
        if any(s <= 0 for s in self.latents_std):
            raise ValueError("latents_std entries must be > 0")
        return self

    @classmethod
    def preset(cls, name: str) -> VAEConfig:
        if name not in VAE_PRESETS:
            raise ValueError(f"unknown VAE preset {name!r}; available: {sorted(VAE_PRESETS)}")
        return VAE_PRESETS[name]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VAEConfig:
        data = dict(data)
        if "temporal_downsample" in data:
            data["temporal_downsample"] = [bool(x) for x in data["temporal_downsample"]]
        return _from_dict(cls, data, "vae config").validate()

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


VAE_PRESETS: dict[str, VAEConfig] = {
    "wan2.2": VAEConfig(),
    # Same architecture, 8x spatial stride, 16 latent channels, small widths.
    "tiny": VAEConfig(
        z_dim=16,
        base_dim=8,
        decoder_base_dim=8,
        dim_mult=(1, 2, 2),
        num_res_blocks=1,
        temporal_downsample=(True, True),
        patch_size=2,
        latents_mean=(0.0,) * 16,
        latents_std=(1.0,) * 16,
    ),
}


# --------------------------------------------------------------------------------------
# Audio features


@dataclass(frozen=True)
class AudioConfig:
    """Which audio feature extractor a model was trained with.

    `extractor` "wav2vec2": hidden states of layers 1..`layers` of `model` (a hub id or a
    local folder), `dim` wide. "mel", for small models: `dim` log-mel bands per video frame;
    layer 1 is the log-mel itself, layer 2 (if `layers` == 2) its frame-to-frame difference.
    """

    extractor: Literal["wav2vec2", "mel"] = "wav2vec2"
    model: str = "facebook/wav2vec2-base-960h"
    layers: int = 12
    dim: int = 768

    def validate(self) -> AudioConfig:
        if self.extractor not in ("wav2vec2", "mel"):
            raise ValueError(f"audio extractor {self.extractor!r}; allowed: 'wav2vec2', 'mel'")
        if self.layers < 1 or self.dim < 1:
            raise ValueError(f"audio layers={self.layers} and dim={self.dim} must be >= 1")
        if self.extractor == "mel" and self.layers > 2:
            raise ValueError(f"mel features have 1 or 2 layers, not {self.layers}")
        if self.extractor == "wav2vec2" and not self.model:
            raise ValueError("a wav2vec2 extractor needs `model` (hub id or local folder)")
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AudioConfig:
        return _from_dict(cls, data, "audio config").validate()

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


AUDIO_PRESETS: dict[str, AudioConfig] = {
    "wav2vec2-base": AudioConfig(),
    "tiny-mel": AudioConfig(extractor="mel", model="", layers=2, dim=16),
}


# --------------------------------------------------------------------------------------
# Streaming


@dataclass(frozen=True)
class StreamConfig:
    """Settings of the streaming generator (ARCHITECTURE section 4).

    `timesteps` are raw values in (0, 1000]; with `shift` s they are warped to
    sigma = s * u / (1 + (s - 1) * u), u = t / 1000, as in the shifted flow-matching schedule.
    `talk_guidance` g != 1 runs each step twice, v = v(talk zeroed) + g (v(talk) - v(talk
    zeroed)): classifier-free guidance on the agent's speech, which widens a faint talking mouth
    at twice the DiT cost (the cache keeps the conditional pass's K/V). `listen_guidance` is
    the same on the user's speech (listen features zeroed), for chunks that have any: more
    listening motion, a second DiT pass only while the agent is not talking, and only in the
    first `listen_guidance_steps` denoising steps (None: all). The first step places the head;
    guiding the later ones too smears a nod into two heads (docs/design.md).
    """

    chunk_frames: int = 3
    steps: int = 3
    timesteps: tuple[float, ...] = (1000.0, 750.0, 500.0)
    shift: float = 5.0
    sink: bool = True
    sink_chunks: int = 1
    window_frames: int = 6
    rapr: bool = True
    rapr_max_distance: int = 10
    cache_update: Literal["noisy", "clean"] = "noisy"
    talk_guidance: float = 1.0
    listen_guidance: float = 1.0
    listen_guidance_steps: int | None = None
    seed: int = 0

    def sigmas(self) -> tuple[float, ...]:
        """Noise levels of the denoising steps, after the shift warp."""
        out = []
        for t in self.timesteps[: self.steps]:
            u = t / 1000.0
            out.append(self.shift * u / (1.0 + (self.shift - 1.0) * u))
        return tuple(out)

    def listen_guided(self, step: int) -> bool:
        """Whether denoising step `step` (0-based) applies the listen guidance."""
        if self.listen_guidance == 1.0:
            return False
        return self.listen_guidance_steps is None or step < self.listen_guidance_steps

    @property
    def sink_frames(self) -> int:
        """Latent frames kept forever: the reference plus `sink_chunks` chunks; 0 without a
        sink (then the reference is an ordinary frame of the rolling window and is evicted)."""
        return 1 + self.sink_chunks * self.chunk_frames if self.sink else 0

    def validate(self) -> StreamConfig:
        if self.chunk_frames < 1:
            raise ValueError(f"chunk_frames={self.chunk_frames} must be >= 1")
        if not 1 <= self.steps <= len(self.timesteps):
            raise ValueError(
                f"steps={self.steps} must be between 1 and the number of timesteps "
                f"({len(self.timesteps)}: {list(self.timesteps)})"
            )
        ts = list(self.timesteps)
        if (
            any(not 0 < t <= 1000 for t in ts)
            or ts != sorted(ts, reverse=True)
            or len(set(ts)) != len(ts)
        ):
            raise ValueError(f"timesteps={ts} must be strictly decreasing values in (0, 1000]")
        if not (self.shift > 0 and math.isfinite(self.shift)):
            raise ValueError(f"shift={self.shift} must be a positive number")
        if self.sink_chunks < 0:
            raise ValueError(f"sink_chunks={self.sink_chunks} must be >= 0")
        if self.window_frames < 0:
            raise ValueError(f"window_frames={self.window_frames} must be >= 0")
        if self.rapr_max_distance < 1:
            raise ValueError(f"rapr_max_distance={self.rapr_max_distance} must be >= 1")
        if self.cache_update not in ("noisy", "clean"):
            raise ValueError(f"cache_update={self.cache_update!r}; allowed: 'noisy', 'clean'")
        steps = self.listen_guidance_steps
        if steps is not None and (
            not isinstance(steps, int) or isinstance(steps, bool) or steps < 1
        ):
            raise ValueError(
                f"listen_guidance_steps={steps!r} must be an integer >= 1 (or null: every step)"
            )
        for name in ("talk_guidance", "listen_guidance"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name}={value} must be a number >= 0")
        return self

    def replace(self, **overrides: Any) -> StreamConfig:
        """Copy with the non-None overrides applied (how the CLI flags are merged in)."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **changes).validate()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamConfig:
        return _from_dict(cls, data, "stream config").validate()

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


# --------------------------------------------------------------------------------------
# The checkpoint's config.json

CheckpointKind = Literal["student", "teacher", "base"]
CHECKPOINT_KINDS: tuple[str, ...] = ("student", "teacher", "base")
CONFIG_FORMAT = "streamavatar"
CONFIG_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelConfig:
    """What a StreamAvatar model folder's `config.json` holds.

    `kind` says what the weights are: `student` (distilled block-causal streaming model, what
    `render` runs), `teacher` (bidirectional audio model), `base` (the Wan backbone with
    untrained audio modules). `audio_trained` is False until a training stage has updated
    the audio modules.
    """

    name: str
    kind: CheckpointKind
    dit: DiTConfig
    vae: VAEConfig
    audio: AudioConfig
    stream: StreamConfig = field(default_factory=StreamConfig)
    audio_trained: bool = False
    description: str = ""
    max_area: int = 704 * 1280
    """Default pixel budget W x H of a render (the size the model was trained at)."""
    domain: str = ""
    """What the model was trained on: "" (people: the 5B path) or "puppet" (the procedural
    puppet domain of the bundled small model; `render` says so, since a photo then renders
    as a puppet-like blur)."""

    def validate(self) -> ModelConfig:
        if self.kind not in CHECKPOINT_KINDS:
            raise ValueError(f"kind={self.kind!r}; allowed: {list(CHECKPOINT_KINDS)}")
        if self.max_area < self.pixel_stride**2:
            raise ValueError(
                f"max_area={self.max_area} is smaller than one {self.pixel_stride}^2 tile"
            )
        if self.dit.in_dim != self.vae.z_dim or self.dit.out_dim != self.vae.z_dim:
            raise ValueError(
                f"DiT in/out channels ({self.dit.in_dim}/{self.dit.out_dim}) do not match the "
                f"VAE latent channels z_dim={self.vae.z_dim}"
            )
        if (self.audio.layers, self.audio.dim) != (
            self.dit.audio_feature_layers,
            self.dit.audio_feature_dim,
        ):
            raise ValueError(
                f"audio features ({self.audio.layers} layers x {self.audio.dim}) do not match "
                f"the DiT's audio_proj input ({self.dit.audio_feature_layers} x "
                f"{self.dit.audio_feature_dim})"
            )
        return self

    @property
    def pixel_stride(self) -> int:
        """Image sides must be multiples of this (VAE spatial stride x DiT patch)."""
        return self.vae.spatial_stride * self.dit.patch_size[1]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        data = dict(data)
        fmt = data.pop("format", None)
        version = data.pop("format_version", None)
        if fmt != CONFIG_FORMAT:
            raise ValueError(f"config.json: format={fmt!r}, expected {CONFIG_FORMAT!r}")
        if version != CONFIG_FORMAT_VERSION:
            raise ValueError(
                f"config.json: format_version={version!r}; this streamavatar reads "
                f"version {CONFIG_FORMAT_VERSION}: upgrade streamavatar"
            )
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(f"config.json: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
        for required in ("name", "kind", "dit", "vae", "audio"):
            if required not in data:
                raise ValueError(f"config.json: missing key {required!r}")
        return cls(
            name=str(data["name"]),
            kind=data["kind"],
            dit=DiTConfig.from_dict(data["dit"]),
            vae=VAEConfig.from_dict(data["vae"]),
            audio=AudioConfig.from_dict(data["audio"]),
            stream=StreamConfig.from_dict(data.get("stream", {})),
            audio_trained=bool(data.get("audio_trained", False)),
            description=str(data.get("description", "")),
            max_area=int(data.get("max_area", 704 * 1280)),
            domain=str(data.get("domain", "")),
        ).validate()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CONFIG_FORMAT,
            "format_version": CONFIG_FORMAT_VERSION,
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "audio_trained": self.audio_trained,
            "max_area": self.max_area,
            **({"domain": self.domain} if self.domain else {}),
            "dit": self.dit.to_dict(),
            "vae": self.vae.to_dict(),
            "audio": self.audio.to_dict(),
            "stream": self.stream.to_dict(),
        }

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e
        try:
            return cls.from_dict(data)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


MODEL_PRESETS: dict[str, ModelConfig] = {
    "wan2.2-ti2v-5b": ModelConfig(
        name="wan2.2-ti2v-5b",
        kind="base",
        dit=DIT_PRESETS["wan2.2-ti2v-5b"],
        vae=VAE_PRESETS["wan2.2"],
        audio=AUDIO_PRESETS["wav2vec2-base"],
    ),
    "tiny": ModelConfig(
        name="tiny",
        kind="student",
        dit=DIT_PRESETS["tiny"],
        vae=VAE_PRESETS["tiny"],
        audio=AUDIO_PRESETS["tiny-mel"],
        max_area=256 * 256,
    ),
}

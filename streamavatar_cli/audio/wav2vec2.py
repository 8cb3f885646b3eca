"""wav2vec2 hidden states as per-video-frame audio features (ARCHITECTURE section 7).

Output contract (shared with `MelFeatures`): float32 [n_frames, layers, dim] on the CPU,
n_frames = round(len(wave) / 16000 * 25), one vector per 25 fps video frame.

Time alignment: wav2vec2 frame i sees samples [320 i, 320 i + 400) (its CNN's stride and
receptive field, read from the config), so its centre is at sample 320 i + 200. Video frame j
is on screen during [j, j + 1) / 25 s; its feature is the linear interpolation of the wav2vec2
frames at that interval's centre, (j + 0.5) / 25 s, clamped at both ends.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from streamavatar_cli.audio.frames import num_video_frames
from streamavatar_cli.config import AUDIO_SAMPLE_RATE, FPS
from streamavatar_cli.errors import ModelError

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _check_local_folder(path: Path) -> None:
    if not path.is_dir():
        raise ModelError(f"wav2vec2 model {path} is a file: give the model folder")
    config = path / "config.json"
    if not config.is_file():
        raise ModelError(f"{path} is not a wav2vec2 model folder (no config.json)")
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, AttributeError) as e:
        raise ModelError(f"{config} is not a valid config.json: {e}") from e
    if model_type != "wav2vec2":
        raise ModelError(
            f"{path} is a {model_type!r} checkpoint, not wav2vec2: give a wav2vec2 model folder"
        )


def _registry_name(repo_id: str) -> str | None:
    """The `streamavatar download` name of a known wav2vec2 repo, else None."""
    from streamavatar_cli import hub

    entry = next((e for e in hub.REGISTRY.values() if e.repo_id.lower() == repo_id.lower()), None)
    return entry.name if entry is not None else None


def _downloaded_folder(repo_id: str) -> Path | None:
    """The folder `streamavatar download` made for `repo_id` in the weights folders, if any."""
    from streamavatar_cli import hub

    if _registry_name(repo_id) is None:
        return None
    try:
        return hub.resolve_model(repo_id)
    except ModelError:
        return None


def _hub_error(name: str, error: Exception) -> ModelError:
    from streamavatar_cli import hub

    short = _registry_name(name)
    fix = (
        f"run `streamavatar download {short}` first"
        if short
        else "put it in the Hugging Face cache or give a local model folder"
    )
    if hub.hub_offline():
        return ModelError(
            f"wav2vec2 model {name!r} is not downloaded and the hub is off (HF_HUB_OFFLINE=1): "
            + fix
        )
    return ModelError(f"cannot load wav2vec2 model {name!r} from the hub ({error}): {fix}")


def load_wav2vec2_model(name_or_path: str | Path, device: str | torch.device = "cpu") -> Any:
    """A `transformers.Wav2Vec2Model` from a local folder or a hub id, in eval mode.

    A hub id is looked up first in the weights folders (where `streamavatar download` puts
    it, e.g. weights/wav2vec2-base-960h), then in the Hugging Face cache / on the hub.

    Only the model is loaded, never a processor: some checkpoints (e.g.
    TencentGameMate/chinese-wav2vec2-base) ship none, so input normalisation is ours.
    transformers prefers `model.safetensors`; a `pytorch_model.bin` (the only file some
    repos have) is read with `weights_only=True`, which refuses pickles holding code.
    """
    import pickle

    from transformers import Wav2Vec2Model

    from streamavatar_cli.models.weights import pickle_refused

    name = str(name_or_path)
    path = Path(name).expanduser()
    if not path.exists() and _HUB_ID.match(name):
        path = _downloaded_folder(name) or path
    local = path.exists()
    if local:
        _check_local_folder(path)
    elif not _HUB_ID.match(name):
        raise ModelError(f"wav2vec2 model folder {name} does not exist: check the path")
    try:
        with _quiet_transformers():
            model, info = Wav2Vec2Model.from_pretrained(
                str(path) if local else name, output_loading_info=True, weights_only=True
            )
    except (OSError, ValueError, RuntimeError, KeyError, pickle.UnpicklingError) as e:
        refused = pickle_refused(path if local else name, e)
        if refused is not None:
            raise refused from e
        if not local:
            raise _hub_error(name, e) from e
        raise ModelError(f"cannot load wav2vec2 weights from {path}: {e}") from e
    # Pretraining/CTC heads are expected extras; a missing encoder weight would silently
    # stay random. masked_spec_embed is only used for training-time masking.
    missing = sorted(k for k in info["missing_keys"] if k != "masked_spec_embed")
    if missing:
        raise ModelError(
            f"wav2vec2 model {name} lacks {len(missing)} weight(s), e.g. {missing[:3]}: "
            "is it a complete wav2vec2 checkpoint?"
        )
    return model.to(device).eval()


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' load report and bars: the extra CTC/pretraining heads are expected."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def normalize_input(wave: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the whole utterance, as Wav2Vec2FeatureExtractor does.

    Statistics come from the whole waveform, not from each window: every window then sees
    the same scaling (a quiet window is not blown up to unit variance), and the windowed
    result matches the single pass as closely as the model's own context allows.
    """
    wave = np.asarray(wave, dtype=np.float32)
    mean = np.float32(wave.mean(dtype=np.float64))
    scale = np.float32(1.0 / np.sqrt(wave.var(dtype=np.float64) + 1e-7))
    return (wave - mean) * scale


def _conv_geometry(config: Any) -> tuple[int, int]:
    """(stride, receptive field) in samples of the wav2vec2 CNN feature encoder."""
    stride, field = 1, 1
    for kernel, step in zip(config.conv_kernel, config.conv_stride, strict=True):
        field += (kernel - 1) * stride
        stride *= step
    return stride, field


class _FixedStatsGroupNorm(nn.Module):
    """The feature encoder's first GroupNorm (one group per channel) with given statistics."""

    def __init__(self, norm: nn.GroupNorm, mean: torch.Tensor, var: torch.Tensor) -> None:
        super().__init__()
        self.norm = norm
        self.register_buffer("mean", mean.to(norm.weight))
        self.register_buffer("var", var.to(norm.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        scale = torch.rsqrt(self.var + self.norm.eps) * self.norm.weight
        return (x - self.mean[:, None]) * scale[:, None] + self.norm.bias[:, None]


class Wav2Vec2Features:
    """Hidden states of wav2vec2 layers 1..`layers`, one vector per video frame.

    hidden_states[0] (the CNN projection before any transformer layer) is skipped. Long
    audio runs in windows of `window_s` seconds overlapping by `overlap_s`; each window
    keeps its middle, so memory is bounded by one window whatever the audio length, and
    each kept frame has >= overlap_s / 2 of context on both sides.

    Base-size wav2vec2 models (`feat_extract_norm="group"`) normalise the first conv layer's
    channels over the whole input. Run per window, that would rescale the features at every
    seam; instead a cheap pre-pass (first conv layer only, window by window) measures those
    statistics over the whole audio and every window uses them. The windowed result then
    differs from one pass over the whole audio only through attention context cut at window
    edges. Not thread-safe per instance (a lock serialises calls).
    """

    def __init__(
        self,
        model: Any,
        layers: int,
        *,
        window_s: float = 20.0,
        overlap_s: float = 2.0,
    ) -> None:
        config = model.config
        if not 1 <= layers <= config.num_hidden_layers:
            raise ValueError(
                f"audio layers={layers}: this wav2vec2 has {config.num_hidden_layers} layers"
            )
        self.model = model
        self.layers = layers
        self.dim = int(config.hidden_size)
        self.stride, self.field = _conv_geometry(config)
        rate = AUDIO_SAMPLE_RATE / self.stride  # wav2vec2 frames per second (50)
        self.overlap = max(2, round(overlap_s * rate))
        self.window = round(window_s * rate)
        if self.window <= self.overlap:
            raise ValueError(f"window_s={window_s} must be longer than overlap_s={overlap_s}")
        self._lock = threading.Lock()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _model_input(self, wave: np.ndarray) -> np.ndarray:
        """Normalised samples, cut (or zero-padded) to exactly what the encoder frames use."""
        x = normalize_input(wave)
        n_enc = 0 if len(x) < self.field else (len(x) - self.field) // self.stride + 1
        used = max(0, n_enc - 1) * self.stride + self.field
        return np.pad(x[:used], (0, max(0, used - len(x))))

    @torch.inference_mode()
    def _first_conv_stats(self, x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and (biased) variance of conv layer 0 over the whole input."""
        conv = self.model.feature_extractor.conv_layers[0].conv
        k, s = conv.kernel_size[0], conv.stride[0]
        n_out = (len(x) - k) // s + 1
        block = max(1, self.window * self.stride // s)
        total = torch.zeros(conv.out_channels, dtype=torch.float64)
        squares = torch.zeros_like(total)
        for a in range(0, n_out, block):
            b = min(n_out, a + block)
            chunk = torch.from_numpy(x[a * s : (b - 1) * s + k])[None, None].to(self.device)
            y = conv(chunk.to(conv.weight.dtype))[0].double().cpu()
            total += y.sum(dim=1)
            squares += (y * y).sum(dim=1)
        mean = total / n_out
        return mean, (squares / n_out - mean**2).clamp_min(0.0)

    @contextmanager
    def _utterance_group_norm(self, x: np.ndarray) -> Iterator[None]:
        """Swap in whole-utterance GroupNorm statistics for the duration of one call."""
        if self.model.config.feat_extract_norm != "group":
            yield
            return
        layer = self.model.feature_extractor.conv_layers[0]
        original = layer.layer_norm
        layer.layer_norm = _FixedStatsGroupNorm(original, *self._first_conv_stats(x))
        try:
            yield
        finally:
            layer.layer_norm = original

    @torch.inference_mode()
    def _run(self, samples: np.ndarray) -> torch.Tensor:
        """Hidden states [frames, layers, dim] of one window of model-input samples."""
        x = torch.from_numpy(np.ascontiguousarray(samples))[None].to(self.device)
        out = self.model(x, output_hidden_states=True)
        states = torch.stack(out.hidden_states[1 : self.layers + 1], dim=2)[0]
        return states.float().cpu()

    def _windows(self, n_enc: int) -> list[tuple[int, int, int]]:
        """(start, keep_from, keep_to) in encoder frames; kept ranges tile [0, n_enc)."""
        starts = [0]
        while starts[-1] + self.window < n_enc:
            starts.append(starts[-1] + self.window - self.overlap)
        ctx = self.overlap // 2
        keep = [0, *(s + ctx for s in starts[1:]), n_enc]
        return [(s, keep[i], keep[i + 1]) for i, s in enumerate(starts)]

    def __call__(self, wave: np.ndarray) -> torch.Tensor:
        n_frames = num_video_frames(len(wave))
        out = torch.zeros(n_frames, self.layers, self.dim)
        if n_frames == 0:
            return out
        x = self._model_input(wave)
        n_enc = (len(x) - self.field) // self.stride + 1
        # fractional encoder frame index at each video frame's centre, (j + 0.5) / 25 s
        centres = (np.arange(n_frames) + 0.5) * AUDIO_SAMPLE_RATE / FPS
        pos = np.clip((centres - self.field / 2) / self.stride, 0, n_enc - 1)
        lo = np.floor(pos).astype(np.int64)
        windows = self._windows(n_enc)
        with self._lock, self._utterance_group_norm(x):
            for k, (start, keep_from, keep_to) in enumerate(windows):
                sel = np.nonzero((lo >= keep_from) & (lo < keep_to))[0]
                if sel.size == 0:
                    continue
                n_win = min(self.window, n_enc - start)
                a = start * self.stride
                states = self._run(x[a : a + (n_win - 1) * self.stride + self.field])
                out[sel] = _interpolate(states, pos[sel] - start)
                log.debug("wav2vec2 window %d/%d done", k + 1, len(windows))
        return out


def _interpolate(states: torch.Tensor, pos: np.ndarray) -> torch.Tensor:
    """Linear interpolation of frames [T, L, D] at fractional positions `pos` in [0, T - 1]."""
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, len(states) - 1)
    w = torch.from_numpy((pos - lo).astype(np.float32))[:, None, None]
    return states[lo] * (1 - w) + states[hi] * w

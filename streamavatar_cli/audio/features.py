"""Per-video-frame audio features, and choosing the extractor a model was trained with.

Every extractor is a callable `wave -> torch.Tensor` of float32 [n_frames, layers, dim]
(CPU), n_frames = round(len(wave) / 16000 * 25), with `layers` and `dim` attributes. Feature
j describes the audio around the centre of video frame j, (j + 0.5) / 25 s.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from streamavatar_cli.audio.frames import SAMPLES_PER_FRAME, num_video_frames
from streamavatar_cli.audio.wav2vec2 import Wav2Vec2Features, load_wav2vec2_model
from streamavatar_cli.config import AUDIO_SAMPLE_RATE, AudioConfig


class FeatureExtractor(Protocol):
    """What the pipeline needs from an extractor: its output shape and the call."""

    layers: int
    dim: int

    def __call__(self, wave: np.ndarray) -> torch.Tensor: ...


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(
    n_mels: int, n_fft: int, sample_rate: int, f_min: float, f_max: float
) -> torch.Tensor:
    """Triangular filters [n_mels, n_fft // 2 + 1] on the HTK mel scale, each summing to 1.

    Unit-sum rows make each band the mean power of its FFT bins, so a band's level does not
    depend on its width or on n_mels, and one log scaling fits every model size. A band too
    narrow to contain a bin centre falls back to its nearest bin instead of being all zero.
    """
    edges = _mel_to_hz(np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2))
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None] - lower) / (centre - lower)
    falling = (upper - freqs[None]) / (upper - centre)
    bank = np.maximum(0.0, np.minimum(rising, falling))
    for row, hz in zip(bank, edges[1:-1], strict=True):
        if row.sum() == 0.0:
            row[np.argmin(np.abs(freqs - hz))] = 1.0
    bank /= bank.sum(axis=1, keepdims=True)
    return torch.from_numpy(bank.astype(np.float32))


class MelFeatures:
    """Log-mel spectrogram, one column per video frame, for small models.

    STFT: hop 640 samples (one column per 25 fps frame), periodic Hann window of 1280
    samples (80 ms, 50 % overlap so every sample counts) centred on each frame's centre,
    bands from 20 Hz to 8 kHz, bin power relative to the window sum (a full-scale sine: 0.25).
    Layer 1 = (log10(max(band power, 1e-8)) + 5) / 3: silence is exactly -1, speech at the
    normalised -23 dBFS level falls in about [-1, 0.5]. Layer 2 (if `layers` == 2) = the
    frame-to-frame difference of layer 1, zero for the first frame. Processed in blocks of
    `block_frames` columns: the STFT is local, so blocking is exact and memory is bounded.
    """

    N_FFT = 2 * SAMPLES_PER_FRAME
    F_MIN = 20.0
    F_MAX = AUDIO_SAMPLE_RATE / 2
    LOG_FLOOR = 1e-8

    def __init__(self, n_mels: int, layers: int = 2, *, block_frames: int = 1500) -> None:
        if layers not in (1, 2):
            raise ValueError(f"mel features have 1 or 2 layers, not {layers}")
        if n_mels < 1:
            raise ValueError(f"n_mels={n_mels} must be >= 1")
        self.dim = n_mels
        self.layers = layers
        self.block_frames = block_frames
        self.window = torch.hann_window(self.N_FFT, periodic=True)
        self.bank = mel_filterbank(n_mels, self.N_FFT, AUDIO_SAMPLE_RATE, self.F_MIN, self.F_MAX)

    def _log_mel(self, frames_audio: torch.Tensor) -> torch.Tensor:
        """[n_frames, n_mels] from the exact samples of n_frames STFT columns."""
        spec = torch.stft(
            frames_audio,
            n_fft=self.N_FFT,
            hop_length=SAMPLES_PER_FRAME,
            window=self.window,
            center=False,
            return_complex=True,
        )
        power = (spec.abs() / self.window.sum()) ** 2
        mel = self.bank @ power
        return ((torch.log10(mel.clamp_min(self.LOG_FLOOR)) + 5.0) / 3.0).T

    def __call__(self, wave: np.ndarray) -> torch.Tensor:
        wave = np.asarray(wave, dtype=np.float32)
        n_frames = num_video_frames(len(wave))
        # column j spans samples [640 j - 320, 640 j + 960): centred on frame j's centre
        half = (self.N_FFT - SAMPLES_PER_FRAME) // 2
        padded = np.zeros(n_frames * SAMPLES_PER_FRAME + 2 * half, dtype=np.float32)
        usable = min(len(wave), n_frames * SAMPLES_PER_FRAME + half)
        padded[half : half + usable] = wave[:usable]
        audio = torch.from_numpy(padded)
        log_mel = torch.zeros(n_frames, self.dim)
        for a in range(0, n_frames, self.block_frames):
            b = min(n_frames, a + self.block_frames)
            start = a * SAMPLES_PER_FRAME
            stop = (b - 1) * SAMPLES_PER_FRAME + self.N_FFT
            log_mel[a:b] = self._log_mel(audio[start:stop])
        if self.layers == 1:
            return log_mel[:, None, :]
        delta = torch.zeros_like(log_mel)
        delta[1:] = log_mel[1:] - log_mel[:-1]
        return torch.stack([log_mel, delta], dim=1)


def load_feature_extractor(
    config: AudioConfig, device: str | torch.device = "cpu"
) -> FeatureExtractor:
    """The extractor `config` names, with its layer count and width checked.

    Raises `ModelError` (a `ValueError`) naming the model path when a wav2vec2 model is
    missing, not wav2vec2, or does not match `config.dim`.
    """
    from streamavatar_cli.errors import ModelError

    config.validate()
    if config.extractor == "mel":
        return MelFeatures(config.dim, config.layers)
    model = load_wav2vec2_model(config.model, device)
    if model.config.hidden_size != config.dim:
        raise ModelError(
            f"wav2vec2 model {config.model} is {model.config.hidden_size} wide but the audio "
            f"config expects dim={config.dim}: use the model the checkpoint was trained with"
        )
    if model.config.num_hidden_layers < config.layers:
        raise ModelError(
            f"wav2vec2 model {config.model} has {model.config.num_hidden_layers} layers but "
            f"the audio config needs {config.layers}"
        )
    return Wav2Vec2Features(model, config.layers)

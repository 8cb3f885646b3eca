"""The audio front end, incrementally: loudness, features and the talk/listen mask of a stream.

Each class takes samples (or frames) in pieces of any size and hands out per-video-frame
results once they are decided, holding only a bounded window, so memory is constant in the
stream's length. What each needs to see beyond a frame before deciding it is its look-ahead:

- features: `StreamingFeatures` re-runs the file extractor on a sliding window (context before,
  look-ahead after). For `MelFeatures` the result equals the whole-file features (look-ahead
  320 samples = 20 ms: half an STFT window past the frame). wav2vec2 sees the window only, so
  it is close to, not equal to, the file path (its statistics are per window).
- mask: `WindowedSmoother` gives exactly what `vad.smooth_mask` gives on the whole mask, with a
  look-ahead of fill_gap + min_talk + 1 frames; `OnlineVoiceActivity` runs Silero's model on
  512-sample windows with its own hysteresis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from streamavatar_cli.audio.features import FeatureExtractor, MelFeatures
from streamavatar_cli.audio.frames import SAMPLES_PER_FRAME, frame_rms, num_video_frames
from streamavatar_cli.audio.load import GATE_BLOCK_S, GATE_REL_DB, PEAK_LIMIT, TARGET_DBFS
from streamavatar_cli.audio.vad import (
    EDGE_SILENCE_DBFS,
    MIN_SWITCH_GAP_S,
    MIN_TALK_S,
    SAME_SPEAKER_GAP_S,
    smooth_mask,
)
from streamavatar_cli.config import AUDIO_SAMPLE_RATE, FPS

SPF = SAMPLES_PER_FRAME


class SampleBuffer:
    """The samples [start, end) of a stream, addressed by absolute sample index."""

    def __init__(self) -> None:
        self.start = 0
        self.data = np.zeros(0, np.float32)

    @property
    def end(self) -> int:
        return self.start + len(self.data)

    def append(self, samples: np.ndarray) -> None:
        self.data = np.concatenate([self.data, np.asarray(samples, np.float32)])

    def get(self, a: int, b: int) -> np.ndarray:
        """Samples [a, b): zeros beyond the end; a must not be before `start`."""
        assert a >= self.start, (a, self.start)
        out = np.zeros(max(0, b - a), np.float32)
        part = self.data[a - self.start : b - self.start]
        out[: len(part)] = part
        return out

    def drop_before(self, index: int) -> None:
        if index > self.start:
            self.data = self.data[index - self.start :]
            self.start = index


# ---- loudness ---------------------------------------------------------------------------------


class CausalLoudness:
    """`load.normalize_loudness` for a stream: the same gate and target, from the audio so far.

    The file path measures the whole track; a stream cannot, so each 20 ms block gets the gain
    measured on everything up to and including it (fixed block boundaries keep the result
    independent of how the pipe split the bytes). The gated block powers live in a histogram of
    0.05 dB bins, so memory is constant. The gain settles within the first seconds of speech.
    """

    BIN_DB = 0.05
    LOW_DB, HIGH_DB = -70.0, 10.0

    def __init__(self) -> None:
        self.block = int(GATE_BLOCK_S * AUDIO_SAMPLE_RATE)
        n_bins = int((self.HIGH_DB - self.LOW_DB) / self.BIN_DB) + 1
        self.count = np.zeros(n_bins, np.int64)
        self.power = np.zeros(n_bins, np.float64)
        self.peak = 0.0
        self.gain = 1.0
        self.pending = np.zeros(0, np.float32)

    def __call__(self, samples: np.ndarray, final: bool = False) -> np.ndarray:
        """Scaled samples for every whole block received (all of them when `final`)."""
        data = np.concatenate([self.pending, np.asarray(samples, np.float32)])
        whole = len(data) if final else len(data) - len(data) % self.block
        self.pending = data[whole:]
        out = np.empty(whole, np.float32)
        for a in range(0, whole, self.block):
            block = data[a : a + self.block]
            if len(block) == self.block:  # a final partial block keeps the last gain
                self._measure(block)
            out[a : a + len(block)] = block * np.float32(self.gain)
        return out

    def _measure(self, block: np.ndarray) -> None:
        power = float(np.mean(block.astype(np.float64) ** 2))
        self.peak = max(self.peak, float(np.abs(block).max()))
        db = 10.0 * math.log10(power) if power > 0 else -math.inf
        if db < self.LOW_DB:
            return
        i = min(len(self.count) - 1, int((db - self.LOW_DB) / self.BIN_DB))
        self.count[i] += 1
        self.power[i] += power
        mean = self.power.sum() / self.count.sum()
        low = int(max(0.0, 10.0 * math.log10(mean) + GATE_REL_DB - self.LOW_DB) / self.BIN_DB)
        n = self.count[low:].sum()
        rms = math.sqrt(self.power[low:].sum() / n) if n else math.sqrt(mean)
        self.gain = min(10.0 ** (TARGET_DBFS / 20.0) / rms, PEAK_LIMIT / self.peak)


# ---- features ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureWindow:
    """What `StreamingFeatures` re-reads around new frames: `context` frames before (their
    rows are recomputed and dropped) and `lookahead` samples after the last frame's end."""

    context: int
    lookahead: int


def feature_window(extractor: FeatureExtractor) -> FeatureWindow:
    """Mel: exact with 2 context frames (the delta layer needs the previous column, whose
    window needs the one before) and half an STFT window of look-ahead. Anything else
    (wav2vec2): 4 s of context and 0.5 s of look-ahead, a compromise between latency and
    agreement with the file path."""
    if isinstance(extractor, MelFeatures):
        return FeatureWindow(2, (MelFeatures.N_FFT - SPF) // 2)
    return FeatureWindow(4 * FPS, AUDIO_SAMPLE_RATE // 2)


class StreamingFeatures:
    """Per-video-frame features of a stream, computed as soon as each frame's look-ahead has
    arrived, from a bounded window of samples."""

    def __init__(self, extractor: FeatureExtractor, window: FeatureWindow | None = None) -> None:
        self.extractor = extractor
        self.window = window or feature_window(extractor)
        self.samples = SampleBuffer()
        self.done = 0  # frames handed out
        self.ended = False

    def push(self, samples: np.ndarray) -> None:
        self.samples.append(samples)

    def end(self) -> None:
        self.ended = True

    @property
    def ready(self) -> int:
        """Frames whose features can be computed now (all of them once the stream ended)."""
        if self.ended:
            return num_video_frames(self.samples.end)
        return max(0, (self.samples.end - self.window.lookahead) // SPF)

    def take(self) -> torch.Tensor:
        """Features [n, layers, dim] of the frames that became ready since the last call."""
        j0, j1 = self.done, self.ready
        if j1 <= j0:
            return torch.zeros(0, self.extractor.layers, self.extractor.dim)
        first = max(0, j0 - self.window.context)
        end = self.samples.end if self.ended else j1 * SPF + self.window.lookahead
        feats = self.extractor(self.samples.get(first * SPF, end))
        self.done = j1
        self.samples.drop_before(max(0, j1 - self.window.context) * SPF)
        return feats[j0 - first : j1 - first]


# ---- mask -------------------------------------------------------------------------------------


class WindowedSmoother:
    """`vad.smooth_mask` for a stream: the same output, frame for frame, decided with a delay.

    smooth_mask's result at a frame depends only on the runs around it: a gap shorter than
    `fill_gap` and a talk run shorter than `min_talk` next to it. So the whole-mask function is
    run on a window ending `radius` = fill_gap + min_talk + 1 frames past the frames it decides
    and starting `radius` frames before them (or at frame 0, where a leading gap stays a gap).
    """

    def __init__(self, fill_gap_s: float, min_talk_s: float) -> None:
        self.fill_gap_s, self.min_talk_s = fill_gap_s, min_talk_s
        self.radius = round(fill_gap_s * FPS) + round(min_talk_s * FPS) + 1
        self.start = 0  # absolute index of raw[0]
        self.raw = np.zeros(0, bool)
        self.done = 0

    @property
    def lookahead(self) -> int:
        return self.radius

    def push(self, frames: np.ndarray, final: bool = False) -> np.ndarray:
        """Add raw frames; return the newly decided ones (all remaining when `final`)."""
        self.raw = np.concatenate([self.raw, np.asarray(frames, bool)])
        end = self.start + len(self.raw)
        upto = end if final else end - self.radius
        if upto <= self.done:
            return np.zeros(0, bool)
        smooth = smooth_mask(self.raw, self.fill_gap_s, self.min_talk_s)
        out = smooth[self.done - self.start : upto - self.start]
        self.done = upto
        keep_from = max(self.start, self.done - self.radius)
        self.raw = self.raw[keep_from - self.start :]
        self.start = keep_from
        return out


class OnlineVoiceActivity:
    """Raw per-frame voice activity of one track, as it arrives: Silero's probability per
    512-sample window with its hysteresis (speech from p >= 0.5 until p < 0.35), a frame active
    when the window under its centre is, and frames quieter than -50 dBFS silent (Silero's
    decisions lag the speech's end; the frame energy does not)."""

    WINDOW = 512
    ON, OFF = 0.5, 0.35

    def __init__(self) -> None:
        from silero_vad import load_silero_vad

        self.model = load_silero_vad()  # one per track: the model carries its stream state
        self.model.reset_states()
        self.samples = SampleBuffer()
        self.states: list[bool] = []  # per window, from window `first_window`
        self.first_window = 0
        self.speaking = False
        self.done = 0

    def push(self, samples: np.ndarray, final: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Add samples; return the newly decided frames' activity and their RMS."""
        self.samples.append(samples)
        n_windows = (
            math.ceil(self.samples.end / self.WINDOW) if final else self.samples.end // self.WINDOW
        )
        with torch.inference_mode():
            for w in range(self.first_window + len(self.states), n_windows):
                chunk = self.samples.get(w * self.WINDOW, (w + 1) * self.WINDOW)
                p = float(self.model(torch.from_numpy(chunk), AUDIO_SAMPLE_RATE))
                self.speaking = p >= self.ON or (self.speaking and p >= self.OFF)
                self.states.append(self.speaking)
        decided_to = self.first_window + len(self.states)
        # frame j's centre sample 640 j + 320 must lie in a decided window; its RMS needs the
        # frame's samples
        n = (decided_to * self.WINDOW - SPF // 2 - 1) // SPF + 1
        n = min(n, num_video_frames(self.samples.end) if final else self.samples.end // SPF)
        return self._frames(n)

    def _frames(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        j = np.arange(self.done, n)
        if len(j) == 0:
            return np.zeros(0, bool), np.zeros(0)
        window = (j * SPF + SPF // 2) // self.WINDOW - self.first_window
        active = np.asarray(self.states, bool)[window]
        a = self.done * SPF
        rms = frame_rms(self.samples.get(a, n * SPF), len(j))
        active &= rms >= 10.0 ** (EDGE_SILENCE_DBFS / 20.0)
        self.done = n
        keep = (n * SPF) // self.WINDOW
        del self.states[: max(0, keep - self.first_window)]
        self.first_window = max(self.first_window, keep)
        self.samples.drop_before(min(n * SPF, self.first_window * self.WINDOW))
        return active, rms


class OverlapResolver:
    """`vad.resolve_overlaps` online: where both speak, the track louder so far in the current
    overlap region wins (the file path compares the whole region's mean, which a stream only
    knows at its end). No look-ahead."""

    def __init__(self) -> None:
        self.agent_sum = self.user_sum = 0.0

    def __call__(self, agent, user, agent_rms, user_rms) -> np.ndarray:
        talk = np.asarray(agent, bool).copy()
        for j in range(len(talk)):
            if agent[j] and user[j]:
                self.agent_sum += float(agent_rms[j])
                self.user_sum += float(user_rms[j])
                talk[j] = self.user_sum <= self.agent_sum
            else:
                self.agent_sum = self.user_sum = 0.0
        return talk


SPEAKER_LOOKAHEAD = round(SAME_SPEAKER_GAP_S * FPS) + round(MIN_TALK_S * FPS) + 1
SWITCH_LOOKAHEAD = round(MIN_SWITCH_GAP_S * FPS) + round(MIN_TALK_S * FPS) + 1

"""Per-chunk inputs of a render: from files loaded up front, or from audio streams as they arrive.

A feed hands the render loop one `ChunkInput` per chunk: the chunk's talk/listen audio windows,
how many video frames it adds, and the stretch of the mix that plays with them. Chunk 0 is the
reference frame (video frame 0, no audio window). `LiveFeed` builds each from streams: it reads
until the chunk's last audio window is decided, which needs, past the chunk's last video frame:
2 frames of window context (80 ms), the feature look-ahead (mel: 20 ms) and, with a voice-
activity mask, the mask's look-ahead (`LiveFeed.lookahead_s` says how much in all).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import torch

from streamavatar_cli.audio import latent_windows, segments_to_mask
from streamavatar_cli.audio.conditioning import window_frames
from streamavatar_cli.audio.features import FeatureExtractor
from streamavatar_cli.audio.frames import SAMPLES_PER_FRAME as SPF
from streamavatar_cli.audio.frames import num_video_frames
from streamavatar_cli.audio.mask import Segment
from streamavatar_cli.audio.online import (
    MIN_SWITCH_GAP_S,
    MIN_TALK_S,
    SAME_SPEAKER_GAP_S,
    CausalLoudness,
    OnlineVoiceActivity,
    OverlapResolver,
    SampleBuffer,
    StreamingFeatures,
    WindowedSmoother,
)
from streamavatar_cli.audio.stream import AudioStream
from streamavatar_cli.config import AUDIO_SAMPLE_RATE, FPS, VAE_TEMPORAL_STRIDE, AudioWindow

AUDIO_LEAD = AUDIO_SAMPLE_RATE // 5
"""The mix runs this far (0.2 s) ahead of the video sent to the encoder: AAC needs 1024+
samples past a frame before it can emit the packet the muxer interleaves with that frame."""

MaskRule = Literal["talk", "file", "vad-one", "vad-two"]


@dataclass
class ChunkInput:
    index: int
    talk: torch.Tensor | None  # [1, chunk_frames, 8, layers, dim]; None for chunk 0
    listen: torch.Tensor | None
    frames: int  # video frames this chunk adds to the output
    audio: np.ndarray  # the next stretch of the mix, in order
    last: bool
    ready_at: float  # perf_counter() when its audio and look-ahead were complete


class Feed(Protocol):
    def chunk(self, index: int) -> ChunkInput | None: ...


def chunk_frames_span(index: int, chunk_frames: int) -> tuple[int, int]:
    """(first, last) video frame of chunk `index` (chunk 0: the reference frame 0)."""
    if index == 0:
        return 0, 0
    per_chunk = VAE_TEMPORAL_STRIDE * chunk_frames
    return per_chunk * (index - 1) + 1, per_chunk * index


class _AudioRelease:
    """Hands out the mix in order: up to the chunk's end + AUDIO_LEAD, everything at the end."""

    def __init__(self) -> None:
        self.sent = 0

    def upto(self, index: int, chunk_frames: int, last: bool, total: int) -> tuple[int, int]:
        _, last_frame = chunk_frames_span(index, chunk_frames)
        end = total if last else min(total, (last_frame + 1) * SPF + AUDIO_LEAD)
        a, self.sent = self.sent, max(self.sent, end)
        return a, self.sent


class FileFeed:
    """Chunks of a job whose audio was loaded whole (`render.prepare`)."""

    def __init__(
        self,
        talk: torch.Tensor,
        listen: torch.Tensor,
        mix: np.ndarray,
        chunk_frames: int,
        window: AudioWindow,
    ):
        self.talk, self.listen, self.mix = talk, listen, mix
        self.n_frames = talk.shape[0]
        self.chunk_frames, self.window = chunk_frames, window
        self.release = _AudioRelease()

    def chunk(self, index: int) -> ChunkInput | None:
        first, last_frame = chunk_frames_span(index, self.chunk_frames)
        if first >= self.n_frames:
            return None
        last = last_frame >= self.n_frames - 1
        talk = listen = None
        if index > 0:
            k = self.chunk_frames * (index - 1) + 1
            talk = latent_windows(self.talk, self.chunk_frames, self.window, first=k)[None]
            listen = latent_windows(self.listen, self.chunk_frames, self.window, first=k)[None]
        a, b = self.release.upto(index, self.chunk_frames, last, len(self.mix))
        frames = min(last_frame, self.n_frames - 1) - first + 1
        return ChunkInput(index, talk, listen, frames, self.mix[a:b], last, time.perf_counter())


class _FrameStore:
    """Per-frame talk/listen features from frame `start` on (older ones are dropped), cut
    into the DiT's audio windows."""

    def __init__(self, window: AudioWindow) -> None:
        self.window = window
        self.start = 0
        self.talk: torch.Tensor | None = None
        self.listen: torch.Tensor | None = None

    @property
    def end(self) -> int:
        return self.start + (0 if self.talk is None else self.talk.shape[0])

    def append(self, talk: torch.Tensor, listen: torch.Tensor) -> None:
        if self.talk is None or self.listen is None:
            self.talk, self.listen = talk, listen
        else:
            self.talk = torch.cat([self.talk, talk])
            self.listen = torch.cat([self.listen, listen])

    def windows(self, first_latent: int, n_latent: int, last_frame: int | None):
        """`latent_windows` by absolute frame index, clamped to [0, last_frame]."""
        assert self.talk is not None and self.listen is not None
        index = window_frames(self.window, first_latent, n_latent).clamp(0, last_frame)
        assert int(index.min()) >= self.start, (int(index.min()), self.start)
        return self.talk[index - self.start][None], self.listen[index - self.start][None]

    def drop_before(self, frame: int) -> None:
        cut = frame - self.start
        if cut > 0 and self.talk is not None and self.listen is not None:
            self.talk, self.listen = self.talk[cut:], self.listen[cut:]
            self.start = frame


class OnlineMask:
    """The speak/listen mask of a stream (1 = talk), by the rule `vad.compute_speak_mask`
    follows for files: all talk (one track), the `--mask` segments, or voice activity."""

    def __init__(self, rule: MaskRule, segments: list[Segment] | None = None) -> None:
        self.rule, self.segments = rule, segments or []
        self.done = 0
        if rule in ("vad-one", "vad-two"):
            self.vad = [OnlineVoiceActivity() for _ in range(1 if rule == "vad-one" else 2)]
            self.speakers = [WindowedSmoother(SAME_SPEAKER_GAP_S, MIN_TALK_S) for _ in self.vad]
            self.rms: list[np.ndarray] = [np.zeros(0) for _ in self.vad]
            self.smoothed: list[np.ndarray] = [np.zeros(0, bool) for _ in self.vad]
            self.resolver = OverlapResolver()
            self.switch = WindowedSmoother(MIN_SWITCH_GAP_S, MIN_TALK_S)

    @property
    def lookahead_frames(self) -> int:
        if self.rule == "vad-one":
            return self.speakers[0].lookahead + 1
        if self.rule == "vad-two":
            return self.speakers[0].lookahead + self.switch.lookahead + 1
        return 0

    def push(self, agent: np.ndarray, user: np.ndarray, end: int, final: bool) -> np.ndarray:
        """Add the next samples of both (padded) tracks, whose end is now `end`; returns the
        newly decided frames."""
        if self.rule in ("talk", "file"):
            n = num_video_frames(end) if final else end // SPF
            j0, self.done = self.done, max(self.done, n)
            if self.rule == "talk":
                return np.ones(self.done - j0, np.int8)
            return segments_to_mask(self.segments, self.done)[j0:]
        decided = []
        for i, track in enumerate((agent, user)[: len(self.vad)]):
            active, rms = self.vad[i].push(track, final)
            self.rms[i] = np.concatenate([self.rms[i], rms])
            self.smoothed[i] = np.concatenate(
                [self.smoothed[i], self.speakers[i].push(active, final)]
            )
            decided.append(len(self.smoothed[i]))
        n = min(decided)
        if self.rule == "vad-one":
            out, self.smoothed[0], self.rms[0] = (
                self.smoothed[0][:n],
                self.smoothed[0][n:],
                self.rms[0][n:],
            )
            return out.astype(np.int8)
        talk = self.resolver(
            self.smoothed[0][:n], self.smoothed[1][:n], self.rms[0][:n], self.rms[1][:n]
        )
        for i in range(2):
            self.smoothed[i], self.rms[i] = self.smoothed[i][n:], self.rms[i][n:]
        return self.switch.push(talk, final).astype(np.int8)


class _Track:
    """One input stream, loudness-normalised as it arrives."""

    def __init__(self, stream: AudioStream) -> None:
        self.stream = stream
        self.loudness = CausalLoudness()
        self.samples = SampleBuffer()
        self.ended = False

    def pull(self, timeout: float) -> None:
        block = self.stream.read(timeout)
        if block is None:
            self.ended = True
            self.samples.append(self.loudness(np.zeros(0, np.float32), final=True))
        else:
            self.samples.append(self.loudness(block))


class LiveFeed:
    """Chunks from one or two audio streams, each as soon as its audio is decided.

    `features`: "mixed" (features of the mix, the paper's rule) or "separate". `rule` and
    `segments`: the mask (see `OnlineMask`). Holds a bounded window of samples and frames.
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        agent: AudioStream,
        user: AudioStream | None,
        *,
        chunk_frames: int,
        rule: MaskRule,
        segments: list[Segment] | None = None,
        window: AudioWindow,
        features: Literal["mixed", "separate"] = "mixed",
    ) -> None:
        self.tracks = [_Track(agent)] + ([_Track(user)] if user is not None else [])
        self.chunk_frames = chunk_frames
        self.features = [
            StreamingFeatures(extractor) for _ in (1, 2)[: 2 if features == "separate" else 1]
        ]
        self.mask = OnlineMask(rule, segments)
        self.mix = SampleBuffer()
        self.pending_feats: list[torch.Tensor] = [f.take() for f in self.features]
        self.pending_mask = np.zeros(0, np.int8)
        self.store = _FrameStore(window)
        self.release = _AudioRelease()
        self.ended = False
        self.ready_at = time.perf_counter()

    @property
    def lookahead_s(self) -> float:
        """Audio needed past a chunk's last video frame before the chunk can be generated."""
        feature = self.features[0].window.lookahead / AUDIO_SAMPLE_RATE
        return self.store.window.lookahead / FPS + feature + self.mask.lookahead_frames / FPS

    @property
    def total_frames(self) -> int | None:
        return num_video_frames(self.mix.end) if self.ended else None

    def close(self) -> None:
        for track in self.tracks:
            track.stream.close()

    def chunk(self, index: int) -> ChunkInput | None:
        first, last_frame = chunk_frames_span(index, self.chunk_frames)
        need = 0 if index == 0 else last_frame + self.store.window.lookahead  # its windows' last
        while not self.ended and self.store.end <= need:
            self._pump()
        total = self.total_frames
        if total is not None and first >= total:
            return None
        last = total is not None and last_frame >= total - 1
        talk = listen = None
        if index > 0:
            k = self.chunk_frames * (index - 1) + 1
            talk, listen = self.store.windows(
                k, self.chunk_frames, None if total is None else total - 1
            )
            # the next chunk's windows start at last_frame + 1 - past; keep one latent more
            self.store.drop_before(last_frame + 1 - self.store.window.past - VAE_TEMPORAL_STRIDE)
        a, b = self.release.upto(index, self.chunk_frames, last, self.mix.end)
        audio = self.mix.get(a, b)
        self.mix.drop_before(b)
        frames = (last_frame if total is None else min(last_frame, total - 1)) - first + 1
        return ChunkInput(index, talk, listen, frames, audio, last, self.ready_at)

    def _pump(self) -> None:
        """Read from the track that is behind; pass every sample all tracks have on."""
        open_tracks = [t for t in self.tracks if not t.ended]
        behind = min(open_tracks, key=lambda t: t.samples.end)
        behind.pull(timeout=0.5)
        self._advance(final=all(t.ended for t in self.tracks))
        self.ready_at = time.perf_counter()

    def _advance(self, final: bool) -> None:
        open_ends = [t.samples.end for t in self.tracks if not t.ended]
        end = min(open_ends) if open_ends else max(t.samples.end for t in self.tracks)
        a = self.mix.end
        parts = [t.samples.get(a, end) for t in self.tracks]  # zeros past an ended track
        for t in self.tracks:
            t.samples.drop_before(min(end, t.samples.end))
        agent = parts[0]
        user = parts[1] if len(parts) > 1 else np.zeros_like(agent)
        mix = np.clip(agent + user, -1.0, 1.0)
        self.mix.append(mix)
        sources = [mix] if len(self.features) == 1 else [agent, user]
        for i, (extractor, samples) in enumerate(zip(self.features, sources, strict=True)):
            extractor.push(samples)
            if final:
                extractor.end()
            self.pending_feats[i] = torch.cat([self.pending_feats[i], extractor.take()])
        self.pending_mask = np.concatenate(
            [self.pending_mask, self.mask.push(agent, user, end, final)]
        )
        self._store_frames()
        self.ended = final

    def _store_frames(self) -> None:
        n = min(len(self.pending_mask), *(len(f) for f in self.pending_feats))
        if n == 0:
            return
        m = torch.from_numpy(self.pending_mask[:n].astype(np.float32))[:, None, None]
        talk = self.pending_feats[0][:n]
        listen = self.pending_feats[-1][:n]
        self.store.append(talk * m, listen * (1 - m))
        self.pending_mask = self.pending_mask[n:]
        self.pending_feats = [f[n:] for f in self.pending_feats]

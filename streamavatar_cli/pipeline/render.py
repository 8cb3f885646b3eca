"""Render one video: reference image + audio -> streamed latents -> decoded frames -> video.

The order of work is chosen for the person waiting: everything that can fail on bad input
(output path, image, audio, mask) is checked before the model runs; frames go to ffmpeg as
they are decoded, so the video is never held in memory; an MP4 appears only when complete.
Live jobs (audio from a pipe or FIFO, video to stdout, a growing .ts or HLS segments) run the
same loop over a `LiveFeed`: each chunk is generated as soon as its audio has arrived, and its
frames and audio go out at once (see `pipeline/live.py` and `video/live.py`).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from streamavatar_cli.audio import (
    build_audio_conditioning,
    compute_speak_mask,
    load_audio,
    load_mask_file,
    mix_tracks,
    num_latent_frames,
    num_video_frames,
)
from streamavatar_cli.audio.mask import Segment, parse_mask_segments
from streamavatar_cli.audio.stream import AudioStream, StreamFormat, is_stream_path
from streamavatar_cli.config import AUDIO_SAMPLE_RATE, FPS, StreamConfig
from streamavatar_cli.errors import InputError, check_input_file
from streamavatar_cli.pipeline.devices import pipeline_by_default, run_pipelined
from streamavatar_cli.pipeline.live import ChunkInput, Feed, FileFeed, LiveFeed, MaskRule
from streamavatar_cli.pipeline.model import StreamAvatarModel, check_renderable
from streamavatar_cli.pipeline.stream import StreamingGenerator
from streamavatar_cli.video import (
    Mp4Writer,
    check_output_path,
    choose_size,
    load_reference_image,
    reference_image_size,
)
from streamavatar_cli.video.live import LiveTarget, LiveWriter, check_live_target, live_target

SLOW_NOTICE_AFTER_S = 2.0
"""Seconds of video after which a live render says (once) that it is slower than real time."""


@dataclass(frozen=True)
class RenderJob:
    """The inputs of one video. Paths are checked by `prepare`, in the order listed."""

    image: Path
    agent_audio: Path
    output: Path
    user_audio: Path | None = None
    mask: Path | None = None
    resolution: tuple[int, int] | None = None
    area: int | None = None
    fit: Literal["crop", "pad"] = "crop"
    listen_when_silent: bool = False
    features: Literal["mixed", "separate"] = "mixed"
    crf: int = 18
    overwrite: bool = False
    segments: bool = False  # `output` is a folder for HLS segments
    audio_format: str = "auto"  # how "-" and FIFO inputs are read (see StreamFormat)
    audio_rate: int = AUDIO_SAMPLE_RATE
    audio_channels: int = 1
    realtime: bool = False  # never send video faster than it plays

    @property
    def target(self) -> LiveTarget:
        """Where the video goes: "-" is stdout, *.ts a growing file, segments an HLS folder."""
        if self.segments:
            return live_target(None, self.output)
        return live_target(self.output)

    @property
    def live_input(self) -> bool:
        """Audio from stdin or a FIFO: read and rendered as it arrives."""
        return is_stream_path(self.agent_audio) or is_stream_path(self.user_audio)


@dataclass
class Progress:
    chunk: int
    chunks: int | None  # None: a live stream, length unknown
    seconds_done: float
    seconds_total: float | None
    elapsed: float

    @property
    def rtf(self) -> float:
        return self.elapsed / self.seconds_done if self.seconds_done else float("nan")


@dataclass
class RenderResult:
    output: str
    frames: int
    seconds: float
    width: int
    height: int
    chunks: int
    model: str
    rtf: dict[str, float]
    ffd: float
    settings: dict
    warnings: list[str] = field(default_factory=list)
    # live input: seconds from a chunk's audio (and look-ahead) arriving to its frames going to
    # the encoder; median, p95, and the look-ahead itself
    latency: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PreparedInputs:
    """Everything `render` needs that came from the user's files, all validated."""

    size: tuple[int, int]
    image: torch.Tensor  # [3, H, W] in [-1, 1]
    mix: np.ndarray  # what the MP4 plays, exactly as long as the longer track
    talk: torch.Tensor  # [n_frames, layers, dim] per-video-frame talk features
    listen: torch.Tensor
    n_frames: int


@dataclass
class LiveInputs:
    """A live job's checked inputs: the image, and the streams opened (first bytes read)."""

    size: tuple[int, int]
    image: torch.Tensor
    feed: LiveFeed


def check_job_output(job: RenderJob) -> None:
    """Refuse an output that cannot be written, before any model is loaded."""
    target = job.target
    if target.kind == "mp4" and not job.live_input:
        check_output_path(job.output, job.overwrite)
    else:
        check_live_target(target, job.overwrite)


def prepare(model: StreamAvatarModel, job: RenderJob) -> PreparedInputs | LiveInputs:
    """Validate and load the job's inputs (cheap next to rendering; fails fast). A live job's
    streams are opened and their headers checked; their audio is read while rendering."""
    check_job_output(job)
    cfg = model.config
    size = choose_size(
        *reference_image_size(job.image),
        stride=cfg.pixel_stride,
        max_area=job.area or cfg.max_area,
        resolution=job.resolution,
    )
    if job.live_input:
        return _prepare_live(model, job, size)
    agent = load_audio(job.agent_audio)
    user = load_audio(job.user_audio) if job.user_audio is not None else None
    mix = mix_tracks(agent, user)
    n_frames = num_video_frames(len(mix))
    if n_frames < 1:
        raise InputError(
            f"{job.agent_audio}: {len(mix) / AUDIO_SAMPLE_RATE:.3f} s of audio is shorter than "
            f"one video frame (1/{FPS} s); give at least {1 / FPS:.2f} s"
        )
    if job.mask is not None:
        speak = load_mask_file(job.mask, n_frames)
    else:
        speak = compute_speak_mask(
            agent, user, listen_when_silent=job.listen_when_silent, n_frames=n_frames
        )
    cond = build_audio_conditioning(model.features, speak, agent, user, features=job.features)
    image = load_reference_image(job.image, size=size, fit=job.fit)
    return PreparedInputs(size, image, mix, cond.talk, cond.listen, n_frames)


def _prepare_live(model: StreamAvatarModel, job: RenderJob, size: tuple[int, int]) -> LiveInputs:
    """Check everything a live job can check before audio flows, then open the streams."""
    if job.features == "separate" and job.user_audio is None:
        raise ValueError("features='separate' needs a user track; give one or use features='mixed'")
    segments = _stream_mask_segments(job.mask) if job.mask is not None else None
    rule: MaskRule = (
        "file" if segments is not None
        else "vad-two" if job.user_audio is not None
        else "vad-one" if job.listen_when_silent
        else "talk"
    )  # fmt: skip
    fmt = StreamFormat(job.audio_format, job.audio_rate, job.audio_channels).validate()
    image = load_reference_image(job.image, size=size, fit=job.fit)
    extractor = model.features
    streams: list[AudioStream] = []
    try:
        for role, path in (("agent audio", job.agent_audio), ("user audio", job.user_audio)):
            if path is not None:
                # the format flags describe the streams; regular files say what they are
                own = fmt if is_stream_path(path) else StreamFormat()
                streams.append(AudioStream(path, own, role).open())
        feed = LiveFeed(
            extractor, streams[0], streams[1] if len(streams) > 1 else None,
            chunk_frames=model.config.stream.chunk_frames, rule=rule, segments=segments,
            window=model.config.dit.audio_frames, features=job.features,
        )  # fmt: skip
    except BaseException:
        for stream in streams:
            stream.close()
        raise
    return LiveInputs(size, image, feed)


def _stream_mask_segments(path: Path) -> list[Segment]:
    """`--mask FILE` for a stream: the file's checks, except the end-of-audio one (unknown)."""
    check_input_file(path, "mask file", "a JSON file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise InputError(f"mask file {path} is not a valid mask JSON file ({e})") from e
    return parse_mask_segments(data, 1 << 40, str(path))


def render(
    model: StreamAvatarModel,
    job: RenderJob,
    stream: StreamConfig | None = None,
    *,
    pipelined: bool | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    inputs: PreparedInputs | LiveInputs | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> RenderResult:
    """Render `job` with `model`; returns what was written and how fast.

    `pipelined` (default: `pipeline_by_default`) decodes and writes in a worker
    thread while the DiT generates the next chunk. `inputs`: `prepare(model, job)` done
    beforehand (the CLI does, so a bad input fails before any warning or progress bar).
    `on_notice` hears, once, that a live render is slower than real time.
    """
    warnings = check_renderable(model)
    stream = stream or model.config.stream
    if inputs is None:
        inputs = prepare(model, job)
    try:
        return _Render(model, job, stream, inputs, warnings, on_notice).run(pipelined, on_progress)
    finally:
        if isinstance(inputs, LiveInputs):
            inputs.feed.close()


class _Render:
    """One render's loop: feed -> generator -> decoder -> writer, with its clocks."""

    def __init__(self, model, job, stream, inputs, warnings, on_notice) -> None:
        self.model, self.job, self.stream, self.inputs = model, job, stream, inputs
        self.warnings: list[str] = warnings
        self.on_notice = on_notice
        self.live_input = isinstance(inputs, LiveInputs)
        self.feed: Feed
        if isinstance(inputs, LiveInputs):
            inputs.feed.chunk_frames = stream.chunk_frames
            self.feed, self.n_frames = inputs.feed, None
        else:
            self.feed = FileFeed(inputs.talk, inputs.listen, inputs.mix, stream.chunk_frames,
                                 model.config.dit.audio_frames)  # fmt: skip
            self.n_frames = inputs.n_frames
        self.dit_device, self.vae_device = model.dit.device, _module_device(model.vae)
        self.generator = StreamingGenerator(model.dit, stream)
        if self.generator.warning:
            warnings.append(self.generator.warning)
        self.clock = _Clock()
        self.latencies: list[float] = []
        self.chunks_done = 0
        self.pace_from: float | None = None
        self.said_slow = False
        self.speed_from: tuple[float, float] | None = None  # (compute s, video s) at chunk 0

    @property
    def n_chunks(self) -> int | None:
        if self.n_frames is None:
            return None
        return math.ceil(num_latent_frames(self.n_frames) / self.stream.chunk_frames)

    def run(self, pipelined: bool | None, on_progress) -> RenderResult:
        if pipelined is None:
            pipelined = pipeline_by_default(self.dit_device, self.vae_device)
        self.on_progress = on_progress
        self.decoder = self.model.vae.stream_decoder()
        with self._writer() as writer:
            self.writer = writer
            run_pipelined(self._latents(), self._decode_and_write, pipelined=pipelined)
        return self._result(pipelined)

    def _writer(self) -> Mp4Writer | LiveWriter:
        width, height = self.inputs.size
        target, job = self.job.target, self.job
        if target.kind == "mp4" and isinstance(self.inputs, PreparedInputs):
            return Mp4Writer(
                job.output, width, height, audio=self.inputs.mix, total_frames=self.n_frames,
                crf=job.crf, overwrite=job.overwrite,
            )  # fmt: skip
        return LiveWriter(target, width, height, crf=job.crf, overwrite=job.overwrite)

    def _latents(self) -> Iterator[tuple[ChunkInput, torch.Tensor]]:
        model, clock = self.model, self.clock
        with torch.inference_mode():
            clock.start()
            first = self.feed.chunk(0)
            if first is None:
                raise InputError(
                    f"{self.job.agent_audio}: the audio is shorter than one video frame "
                    f"(1/{FPS} s); give at least {1 / FPS:.2f} s"
                )
            with clock.timing("vae", self.vae_device):
                image = self.inputs.image[None, :, None].to(self.vae_device, _dtype(model.vae))
                reference = model.vae.encode(image)
            yield first, reference
            if first.last:
                return
            self.generator.start(reference.to(self.dit_device, torch.float32))
            index = 1
            while (item := self.feed.chunk(index)) is not None:
                assert item.talk is not None and item.listen is not None
                talk, listen = item.talk.to(self.dit_device), item.listen.to(self.dit_device)
                with clock.timing("dit", self.dit_device):
                    out = self.generator.next_chunk(talk, listen)
                yield item, out
                if item.last:
                    return
                index += 1

    def _decode_and_write(self, item: tuple[ChunkInput, torch.Tensor]) -> None:
        chunk, latent = item
        model, clock = self.model, self.clock
        with torch.inference_mode(), clock.timing("vae", self.vae_device):
            frames = self.decoder.decode(latent.to(self.vae_device, _dtype(model.vae)))
        frames = frames[0, :, : chunk.frames].float().cpu()
        self._pace()
        if isinstance(self.writer, LiveWriter):
            self.writer.write_audio(chunk.audio)
        self.writer.write(frames, layout="cthw")
        self.latencies.append(time.perf_counter() - chunk.ready_at)
        self.chunks_done = chunk.index
        if chunk.index == 1 or (chunk.index == 0 and chunk.last):
            clock.first_frame()
        done = self.writer.frames_written / FPS
        self._check_speed(done, chunk.index)
        if self.on_progress is not None:
            total = None if self.n_frames is None else self.n_frames / FPS
            self.on_progress(Progress(chunk.index, self.n_chunks, done, total, clock.elapsed()))

    def _pace(self) -> None:
        """--realtime: frame n leaves no earlier than n / 25 s after the first one did."""
        if not self.job.realtime:
            return
        now = time.perf_counter()
        if self.pace_from is None:
            self.pace_from = now
            return
        delay = self.pace_from + self.writer.frames_written / FPS - now
        if delay > 0:
            time.sleep(delay)

    def _check_speed(self, seconds_done: float, index: int) -> None:
        """Live and --realtime renders say once when the model cannot keep up."""
        live = self.live_input or self.job.realtime or self.job.target.kind != "mp4"
        spent = self.clock.spent["dit"] + self.clock.spent["vae"]
        if index <= 1:  # the reference and the first chunk warm kernels up: measure after them
            self.speed_from = (spent, seconds_done)
            return
        assert self.speed_from is not None
        seconds = seconds_done - self.speed_from[1]
        if self.said_slow or not live or seconds < SLOW_NOTICE_AFTER_S:
            return
        rtf = (spent - self.speed_from[0]) / seconds
        if rtf > 1.0:
            self.said_slow = True
            message = (
                f"slower than real time: RTF {rtf:.2f} (each second of video takes {rtf:.2f} s "
                "to make); the video falls behind the audio, nothing is dropped"
            )
            self.warnings.append(message)
            if self.on_notice is not None:
                self.on_notice(message)

    def _result(self, pipelined: bool) -> RenderResult:
        job, clock = self.job, self.clock
        frames = self.writer.frames_written
        seconds = frames / FPS
        total = clock.elapsed()
        width, height = self.inputs.size
        latency: dict[str, float] = {}
        if self.live_input and self.latencies:
            ordered = sorted(self.latencies)
            latency = {
                "median": statistics.median(ordered),
                "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
                "lookahead": self.feed.lookahead_s,  # type: ignore[union-attr]
            }
        return RenderResult(
            output=job.target.name,
            frames=frames,
            seconds=seconds,
            width=width,
            height=height,
            chunks=self.chunks_done,
            model=self.model.name,
            rtf={
                "dit": clock.spent["dit"] / seconds,
                "vae": clock.spent["vae"] / seconds,
                "total": total / seconds,
            },
            ffd=clock.ffd if clock.ffd is not None else total,
            settings={
                "stream": self.stream.to_dict(),
                "pipelined": pipelined,
                "dit_device": str(self.dit_device),
                "vae_device": str(self.vae_device),
                "fit": job.fit,
                "features": job.features,
                "crf": job.crf,
                "live_input": self.live_input,
                "output_kind": job.target.kind,
                "realtime": job.realtime,
            },
            warnings=self.warnings,
            latency=latency,
        )


def _module_device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def _dtype(module: torch.nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


class _Clock:
    """Wall time since the stream started, time spent per module, first-frame delay.

    Per-module times need the device to finish its queued work, so CUDA is synchronised at
    the end of each timed section (never inside the model's loop).
    """

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.spent = {"dit": 0.0, "vae": 0.0}
        self.ffd: float | None = None

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def first_frame(self) -> None:
        self.ffd = self.elapsed()

    def timing(self, module: str, device: torch.device) -> _Timed:
        return _Timed(self, module, device)


class _Timed:
    def __init__(self, clock: _Clock, module: str, device: torch.device):
        self.clock, self.module, self.device = clock, module, device

    def __enter__(self) -> None:
        self.t = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.clock.spent[self.module] += time.perf_counter() - self.t

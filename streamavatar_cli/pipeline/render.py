"""Render one video: reference image + audio -> streamed latents -> decoded frames -> MP4.

The order of work is chosen for the person waiting: everything that can fail on bad input
(output path, image, audio, mask) is checked before the model runs; frames go to ffmpeg as
they are decoded, so the video is never held in memory; the MP4 appears only when complete.
"""

from __future__ import annotations

import math
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
    latent_windows,
    load_audio,
    load_mask_file,
    mix_tracks,
    num_latent_frames,
    num_video_frames,
)
from streamavatar_cli.config import AUDIO_SAMPLE_RATE, FPS, StreamConfig
from streamavatar_cli.errors import InputError
from streamavatar_cli.pipeline.devices import run_pipelined
from streamavatar_cli.pipeline.model import StreamAvatarModel, check_renderable
from streamavatar_cli.pipeline.stream import StreamingGenerator
from streamavatar_cli.video import (
    Mp4Writer,
    check_output_path,
    choose_size,
    load_reference_image,
    reference_image_size,
)


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


@dataclass
class Progress:
    chunk: int
    chunks: int
    seconds_done: float
    seconds_total: float
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


def prepare(model: StreamAvatarModel, job: RenderJob) -> PreparedInputs:
    """Validate and load the job's inputs (cheap next to rendering; fails fast)."""
    check_output_path(job.output, job.overwrite)
    cfg = model.config
    size = choose_size(
        *reference_image_size(job.image),
        stride=cfg.pixel_stride,
        max_area=job.area or cfg.max_area,
        resolution=job.resolution,
    )
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


def render(
    model: StreamAvatarModel,
    job: RenderJob,
    stream: StreamConfig | None = None,
    *,
    pipelined: bool | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    inputs: PreparedInputs | None = None,
) -> RenderResult:
    """Render `job` with `model`; returns what was written and how fast.

    `pipelined` (default: DiT and VAE on different devices) decodes and writes in a worker
    thread while the DiT generates the next chunk. `inputs`: `prepare(model, job)` done
    beforehand (the CLI does, so a bad input fails before any warning or progress bar).
    """
    warnings = check_renderable(model)
    stream = stream or model.config.stream
    if inputs is None:
        inputs = prepare(model, job)
    dit_device, vae_device = model.dit.device, _module_device(model.vae)
    if pipelined is None:
        pipelined = dit_device != vae_device

    n_latent = num_latent_frames(inputs.n_frames)
    n_chunks = math.ceil(n_latent / stream.chunk_frames)
    seconds = inputs.n_frames / FPS
    generator = StreamingGenerator(model.dit, stream)
    if generator.warning:
        warnings.append(generator.warning)
    clock = _Clock()

    def latents() -> Iterator[tuple[int, torch.Tensor]]:
        with torch.inference_mode():
            clock.start()
            with clock.timing("vae", vae_device):
                image = inputs.image[None, :, None].to(vae_device, _dtype(model.vae))
                reference = model.vae.encode(image)
            yield 0, reference
            generator.start(reference.to(dit_device, torch.float32))
            for chunk in range(1, n_chunks + 1):
                talk, listen = _chunk_audio(inputs, chunk, stream.chunk_frames, dit_device)
                with clock.timing("dit", dit_device):
                    out = generator.next_chunk(talk, listen)
                yield chunk, out

    decoder = model.vae.stream_decoder()
    width, height = inputs.size

    with Mp4Writer(
        job.output, width, height, audio=inputs.mix, total_frames=inputs.n_frames,
        crf=job.crf, overwrite=job.overwrite,
    ) as writer:  # fmt: skip

        def decode_and_write(item: tuple[int, torch.Tensor]) -> None:
            chunk, lat = item
            with torch.inference_mode(), clock.timing("vae", vae_device):
                frames = decoder.decode(lat.to(vae_device, _dtype(model.vae)))
            writer.write(frames[0].float().cpu(), layout="cthw")
            if chunk == 1:
                clock.first_frame()
            if on_progress is not None:
                done = min(writer.frames_written, inputs.n_frames) / FPS
                on_progress(Progress(chunk, n_chunks, done, seconds, clock.elapsed()))

        run_pipelined(latents(), decode_and_write, pipelined=pipelined)
    total = clock.elapsed()
    return RenderResult(
        output=str(job.output),
        frames=inputs.n_frames,
        seconds=seconds,
        width=width,
        height=height,
        chunks=n_chunks,
        model=model.name,
        rtf={
            "dit": clock.spent["dit"] / seconds,
            "vae": clock.spent["vae"] / seconds,
            "total": total / seconds,
        },
        ffd=clock.ffd if clock.ffd is not None else total,
        settings={
            "stream": stream.to_dict(),
            "pipelined": pipelined,
            "dit_device": str(dit_device),
            "vae_device": str(vae_device),
            "fit": job.fit,
            "features": job.features,
            "crf": job.crf,
        },
        warnings=warnings,
    )


def _chunk_audio(
    inputs: PreparedInputs, chunk: int, chunk_frames: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Audio windows [1, chunk_frames, 8, L, D] of the chunk's latent frames, built lazily so
    memory does not grow with the video's length."""
    first = chunk_frames * (chunk - 1) + 1
    talk = latent_windows(inputs.talk, chunk_frames, first=first)
    listen = latent_windows(inputs.listen, chunk_frames, first=first)
    return talk[None].to(device), listen[None].to(device)


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

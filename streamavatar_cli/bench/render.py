"""Whole renders through `pipeline.render`: the small model's real-time factor and first-frame
delay, and what the two-thread pipeline gains over the sequential render.

The inputs are made here (a noise image, a syllable-rate tone) so the benchmark needs no repo
files; the model is `random-tiny`, which has the bundled small model's architecture and
therefore its cost.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from streamavatar_cli.bench.measure import Result, alternate
from streamavatar_cli.config import AUDIO_SAMPLE_RATE
from streamavatar_cli.models import WanDiT
from streamavatar_cli.pipeline.model import StreamAvatarModel, random_tiny_model
from streamavatar_cli.pipeline.render import RenderJob, RenderResult, prepare, render


def _write_inputs(folder: Path, seconds: float, size: int) -> tuple[Path, Path]:
    """A reference image and a speech-like agent track (a tone with a 3 Hz syllable envelope)."""
    import soundfile
    from PIL import Image

    rng = np.random.default_rng(0)
    image, audio = folder / "reference.png", folder / "agent.wav"
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(image)
    t = np.arange(round(seconds * AUDIO_SAMPLE_RATE)) / AUDIO_SAMPLE_RATE
    wave = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    soundfile.write(audio, wave.astype(np.float32), AUDIO_SAMPLE_RATE)
    return image, audio


def _widened(model: StreamAvatarModel, dim: int, layers: int) -> StreamAvatarModel:
    """The same model with a wider random DiT (head_dim 32): a knob to balance DiT and VAE."""
    dit_cfg = dataclasses.replace(
        model.config.dit, dim=dim, ffn_dim=4 * dim, num_heads=dim // 32, num_layers=layers
    )
    torch.manual_seed(0)
    dit = WanDiT(dit_cfg).eval().requires_grad_(False)
    return dataclasses.replace(
        model, config=dataclasses.replace(model.config, dit=dit_cfg), dit=dit
    )


class _Renderer:
    """One prepared job (inputs loaded once), rendered again on demand into a temp folder."""

    def __init__(self, model: StreamAvatarModel, folder: Path, seconds: float, size: int):
        image, audio = _write_inputs(folder, seconds, size)
        self.model = model
        self.job = RenderJob(
            image, audio, folder / "out.mp4", resolution=(size, size), overwrite=True
        )
        self.inputs = prepare(model, self.job)

    def __call__(self, pipelined: bool, threads: int | None = None) -> RenderResult:
        """Render once; `threads` sets torch's threads for this render (each side's, when
        pipelined: a worker thread takes the value set when it starts)."""
        before = torch.get_num_threads()
        torch.set_num_threads(threads or before)
        try:
            return render(self.model, self.job, pipelined=pipelined, inputs=self.inputs)
        finally:
            torch.set_num_threads(before)


# ---- 5. real-time factor and first-frame delay ----------------------------------------------


@dataclass(frozen=True)
class RenderSpeed(Result):
    seconds: float
    size: int
    dit_rtf: float
    vae_rtf: float
    first_frame_s: float
    threads: int

    title = "small model render: RTF (compute time / video time)"
    target = 1.0

    def detail(self) -> str:
        return (
            f"DiT {self.dit_rtf:.2f}, VAE {self.vae_rtf:.2f}; first frame after "
            f"{self.first_frame_s:.2f} s ({self.seconds:.0f} s at {self.size}x{self.size}, "
            f"random-tiny, {self.threads} threads)"
        )


def render_speed(seconds: float = 10.0, size: int = 256) -> RenderSpeed:
    """A default (sequential) render of `seconds` of audio at size x size pixels."""
    with tempfile.TemporaryDirectory() as tmp:
        renderer = _Renderer(random_tiny_model(), Path(tmp), seconds, size)
        result = renderer(pipelined=False)
    rtf = result.rtf
    return RenderSpeed(
        rtf["total"],
        result.seconds,
        size,
        rtf["dit"],
        rtf["vae"],
        result.ffd,
        torch.get_num_threads(),
    )


# ---- 4. the two-thread pipeline -------------------------------------------------------------


@dataclass(frozen=True)
class PipelineSpeedup(Result):
    pipelined_s: float
    sequential_s: float  # on one side's threads: the "one device" render
    sequential_all_threads_s: float  # torch's default threads: what a user would run
    dit_s: float  # per-module times of the sequential render: how balanced the sides are
    vae_s: float
    threads: int  # per side

    title = "two-thread pipeline: pipelined / sequential render wall time"
    target = 0.70

    def detail(self) -> str:
        t = self.threads
        return (
            f"pipelined {self.pipelined_s:.2f} s ({t}+{t} torch threads), sequential "
            f"{self.sequential_s:.2f} s ({t} thread(s); DiT {self.dit_s:.2f} s, VAE "
            f"{self.vae_s:.2f} s), sequential on {2 * t} threads "
            f"{self.sequential_all_threads_s:.2f} s"
        )


def pipeline_speedup(
    seconds: float = 5.0, size: int = 256, dit_dim: int = 128, dit_layers: int = 3, rounds: int = 2
) -> PipelineSpeedup:
    """The CPU form of the two-device split: DiT and VAE each on half of torch's threads,
    against the sequential render on half of them (one "device") and on all of them, in
    turn. random-tiny's DiT is widened to `dit_dim` x `dit_layers` so that, on one thread,
    it costs about what the tiny VAE does: pipelining can at best hide the cheaper side."""
    half = max(1, torch.get_num_threads() // 2)
    model = _widened(random_tiny_model(), dit_dim, dit_layers)
    sequential: list[RenderResult] = []
    with tempfile.TemporaryDirectory() as tmp:
        renderer = _Renderer(model, Path(tmp), seconds, size)
        times = alternate(
            {
                "sequential": lambda i: sequential.append(renderer(False, threads=half)),
                "pipelined": lambda i: renderer(True, threads=half),
                "all_threads": lambda i: renderer(False),
            },
            rounds,
        )
    wall = {name: float(np.median(t)) for name, t in times.items()}
    rtf, video_s = sequential[-1].rtf, sequential[-1].seconds
    return PipelineSpeedup(
        wall["pipelined"] / wall["sequential"],
        wall["pipelined"],
        wall["sequential"],
        wall["all_threads"],
        rtf["dit"] * video_s,
        rtf["vae"] * video_s,
        half,
    )

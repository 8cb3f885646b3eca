"""The `streamavatar` command: a thin Typer layer over the Python API.

It parses arguments, calls the library, prints. Errors the user can cause become one line on
stderr and a documented exit code (see `errors.py`); Ctrl-C exits 130.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from streamavatar_cli import __version__
from streamavatar_cli.errors import (
    EXIT_BATCH_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    StreamAvatarError,
    Terminated,
    raise_on_sigterm,
)

app = typer.Typer(
    name="streamavatar",
    help="Render talking-and-listening avatar videos from one image and one or two audio tracks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Typer vendors click in recent releases; find its usage-error base class without importing it.
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
err_console = Console(stderr=True, highlight=False)
console = Console(highlight=False)


def _version_callback(value: bool) -> None:
    if value:
        print(f"streamavatar {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version_callback,
        is_eager=True,
        help="Print the version and exit.",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show library log messages."),
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


# ---- options shared by render and batch (declared once) -------------------------------------

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model", "-m", envvar="STREAMAVATAR_MODEL", show_envvar=True,
        help="Model folder or name in weights/ (default: the bundled streamavatar-tiny; "
        "`random-tiny` = untrained smoke-test model).",
    ),
]  # fmt: skip
ResolutionOpt = Annotated[
    str | None, typer.Option(help="Output size WxH (multiples of the model's stride).")
]
AreaOpt = Annotated[
    int | None, typer.Option(help="Pixel budget W*H when --resolution is not given.")
]
FitOpt = Annotated[str, typer.Option(help="crop: fill the frame; pad: show the whole image.")]
SeedOpt = Annotated[int | None, typer.Option(help="Noise seed (default: the model's).")]
StepsOpt = Annotated[int | None, typer.Option(help="Denoising steps per chunk.")]
NoSinkOpt = Annotated[
    bool, typer.Option("--no-sink", help="Do not pin the reference in the cache.")
]
NoRaprOpt = Annotated[
    bool, typer.Option("--no-rapr", help="Vanilla RoPE positions instead of RAPR.")
]
WindowOpt = Annotated[int | None, typer.Option(help="Rolling window, in latent frames.")]
MaxDistanceOpt = Annotated[int | None, typer.Option(help="RAPR's maximum distance D.")]
CacheUpdateOpt = Annotated[
    str | None, typer.Option(help="noisy (paper) or clean (one more forward).")
]
TalkGuidanceOpt = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        help="Guidance on the agent's speech: >1 opens the mouth wider, 1 is off "
        "(default: the model's; each step runs twice when not 1).",
    ),
]
ListenGuidanceOpt = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        help="Guidance on the user's speech: >1 nods and moves more while listening, 1 is off "
        "(default: the model's; listening steps run twice when not 1).",
    ),
]
DeviceOpt = Annotated[
    str | None, typer.Option(help="cpu, cuda or cuda:N (default: cuda if present).")
]
DtypeOpt = Annotated[str | None, typer.Option(help="fp32, bf16 or fp16 (default: bf16 on GPU).")]
DitDeviceOpt = Annotated[str | None, typer.Option(help="Device of the DiT (default: --device).")]
VaeDeviceOpt = Annotated[str | None, typer.Option(help="Device of the VAE (default: --device).")]
CompileOpt = Annotated[
    bool,
    typer.Option("--compile", help="torch.compile the DiT blocks (GPUs; slower on CPUs)."),
]
CrfOpt = Annotated[
    int, typer.Option(min=0, max=51, help="x264 quality, 0 (lossless) .. 51 (worst).")
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress or summary; errors only.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object with the result.")]


def _stream_overrides(seed, steps, no_sink, no_rapr, window, max_distance, cache_update,
                      talk_guidance, listen_guidance) -> dict:  # fmt: skip
    return {
        "seed": seed, "steps": steps, "sink": False if no_sink else None,
        "rapr": False if no_rapr else None, "window_frames": window,
        "rapr_max_distance": max_distance, "cache_update": cache_update,
        "talk_guidance": talk_guidance, "listen_guidance": listen_guidance,
    }  # fmt: skip


def _open_model(model, device, dtype, dit_device, vae_device, compile):
    from streamavatar_cli.pipeline.devices import parse_device, parse_dtype
    from streamavatar_cli.pipeline.model import open_model

    base = parse_device(device)
    dit_dev = parse_device(dit_device) if dit_device else base
    vae_dev = parse_device(vae_device) if vae_device else base
    return open_model(
        model, dit_device=dit_dev, vae_device=vae_dev, dtype=parse_dtype(dtype, dit_dev),
        compile=compile,
    )  # fmt: skip


@app.command()
def render(
    image: Annotated[Path, typer.Option("--image", "-i", help="Reference photo of the person.")],
    agent_audio: Annotated[
        Path,
        typer.Option(
            "--agent-audio",
            "-a",
            help="The avatar's own speech (any format); - or a FIFO: read as it arrives.",
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="NAME.mp4; NAME.ts (MPEG-TS, playable while it grows); - (MPEG-TS on stdout).",
        ),
    ] = None,
    user_audio: Annotated[
        Path | None,
        typer.Option("--user-audio", "-u", help="The other person's speech (file, FIFO or -)."),
    ] = None,
    mask: Annotated[
        Path | None, typer.Option(help="Talk/listen timeline JSON (see `streamavatar mask`).")
    ] = None,
    listen_when_silent: Annotated[
        bool,
        typer.Option(
            "--listen-when-silent",
            help="One track: listen where it is silent (default: talk throughout).",
        ),
    ] = False,
    features: Annotated[
        str, typer.Option(help="mixed (paper: features of the mix) or separate (per track).")
    ] = "mixed",
    model: ModelOpt = None,
    resolution: ResolutionOpt = None,
    area: AreaOpt = None,
    fit: FitOpt = "crop",
    seed: SeedOpt = None,
    steps: StepsOpt = None,
    no_sink: NoSinkOpt = False,
    no_rapr: NoRaprOpt = False,
    window: WindowOpt = None,
    max_distance: MaxDistanceOpt = None,
    cache_update: CacheUpdateOpt = None,
    talk_guidance: TalkGuidanceOpt = None,
    listen_guidance: ListenGuidanceOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    dit_device: DitDeviceOpt = None,
    vae_device: VaeDeviceOpt = None,
    compile: CompileOpt = False,
    pipeline: Annotated[
        bool | None,
        typer.Option(
            "--pipeline/--no-pipeline",
            help="Decode in a second thread while the DiT works (default: when DiT and VAE "
            "are on different devices, or share a CPU with 2+ cores).",
        ),
    ] = None,
    crf: CrfOpt = 18,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing output file.")
    ] = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
    segments: Annotated[
        Path | None,
        typer.Option(help="Write HLS instead: DIR/index.m3u8 and 2 s segments, as they are made."),
    ] = None,
    audio_format: Annotated[
        str,
        typer.Option(
            help="How - and FIFO audio is read: auto (WAV or probed), wav, s16le, f32le, "
            "... or an ffmpeg format (mp3, ogg)."
        ),
    ] = "auto",
    audio_rate: Annotated[int, typer.Option(help="Sample rate of raw (s16le, ...) audio.")] = 16000,
    audio_channels: Annotated[int, typer.Option(help="Channels of raw audio.")] = 1,
    realtime: Annotated[
        bool, typer.Option("--realtime", help="Send video no faster than it plays (live viewers).")
    ] = False,
) -> None:
    """Render a talking-and-listening avatar video from an image and one or two audio tracks.

    Live: `-a -` reads audio from stdin as it arrives, `-o -` writes MPEG-TS to stdout chunk by
    chunk (see the README's Live section)."""
    from streamavatar_cli.pipeline.render import RenderJob, check_job_output, prepare
    from streamavatar_cli.video import parse_resolution

    if (output is None) == (segments is None):
        raise typer.BadParameter("give --output FILE (or - for stdout), or --segments DIR")
    job = RenderJob(
        image=image, agent_audio=agent_audio, output=output or segments, user_audio=user_audio,
        mask=mask, resolution=parse_resolution(resolution) if resolution else None, area=area,
        fit=_choice("--fit", fit, ("crop", "pad")), listen_when_silent=listen_when_silent,
        features=_choice("--features", features, ("mixed", "separate")), crf=crf,
        overwrite=overwrite, segments=segments is not None, audio_format=audio_format,
        audio_rate=audio_rate, audio_channels=audio_channels, realtime=realtime,
    )  # fmt: skip
    check_job_output(job)  # before loading any model
    global _interrupted_message
    if job.target.kind != "mp4":
        _interrupted_message = LIVE_INTERRUPTED_MESSAGE
    loaded = _open_model(model, device, dtype, dit_device, vae_device, compile)
    stream = loaded.config.stream.replace(**_stream_overrides(
        seed, steps, no_sink, no_rapr, window, max_distance, cache_update, talk_guidance,
        listen_guidance))  # fmt: skip
    warnings = _renderable_warnings(loaded)
    inputs = prepare(loaded, job)  # every input checked: a bad one fails as one line, alone
    shown = _warn(warnings, quiet or as_json)  # before the long wait
    result = _render_with_progress(
        loaded, job, stream, pipeline, inputs, show=not (quiet or as_json),
        on_notice=lambda message: shown.extend(_warn([message], quiet or as_json)),
    )  # fmt: skip
    _warn([w for w in result.warnings if w not in shown], quiet or as_json)
    _report(result, quiet, as_json, to_stderr=job.target.kind == "stdout")


def _choice(flag: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise typer.BadParameter(f"{value!r}; choose from {', '.join(allowed)}", param_hint=flag)
    return value


def _renderable_warnings(loaded) -> list[str]:
    from streamavatar_cli.pipeline.model import check_renderable

    return check_renderable(loaded)


def _warn(warnings: list[str], hide: bool) -> list[str]:
    if not hide:
        for warning in warnings:
            err_console.print(f"[yellow]warning:[/yellow] {escape(warning)}", soft_wrap=True)
    return warnings


def _render_with_progress(loaded, job, stream, pipelined, inputs, *, show: bool, on_notice=None):
    """Render with a rich progress bar on stderr (chunks, seconds of video, live RTF)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from streamavatar_cli.pipeline.render import render as render_video

    if not show:
        return render_video(
            loaded, job, stream, pipelined=pipelined, inputs=inputs, on_notice=on_notice
        )
    columns = (
        TextColumn("[bold]rendering"), BarColumn(),
        TextColumn("chunk {task.fields[chunk]}"), TextColumn("{task.fields[seconds]}"),
        TextColumn("RTF {task.fields[rtf]}"), TimeElapsedColumn(),
    )  # fmt: skip
    with Progress(*columns, console=err_console) as bar:
        task = bar.add_task("render", total=None, seconds="", rtf="-", chunk="")

        def update(p) -> None:
            bar.update(
                task, completed=p.chunk, total=p.chunks, rtf=f"{p.rtf:.2f}",
                chunk=f"{p.chunk}/{p.chunks}" if p.chunks is not None else str(p.chunk),
                seconds=f"{p.seconds_done:.1f}"
                + (f"/{p.seconds_total:.1f} s" if p.seconds_total is not None else " s"),
            )  # fmt: skip

        return render_video(
            loaded, job, stream, pipelined=pipelined, inputs=inputs, on_progress=update,
            on_notice=on_notice,
        )  # fmt: skip


def _report(result, quiet: bool, as_json: bool, *, to_stderr: bool = False) -> None:
    """The summary (or --json) on stdout, or on stderr when stdout carries the video."""
    import json

    if as_json:
        print(json.dumps(result.to_dict()), file=sys.stderr if to_stderr else sys.stdout)
    elif not quiet:
        rtf = result.rtf
        (err_console if to_stderr else console).print(
            f"[green]wrote[/green] {escape(result.output)}: {result.frames} frames, "
            f"{result.seconds:.2f} s, {result.width}x{result.height}; RTF {rtf['total']:.2f} "
            f"(DiT {rtf['dit']:.2f}, VAE {rtf['vae']:.2f}), first frame after {result.ffd:.2f} s",
            soft_wrap=True,
        )


@app.command()
def batch(
    manifest: Annotated[Path, typer.Argument(help="Jobs: a .csv with a header or a .jsonl file.")],
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Where <id>.mp4 files go.")],
    force: Annotated[
        bool, typer.Option("--force", help="Render again jobs whose output exists.")
    ] = False,
    shard: Annotated[
        str | None,
        typer.Option(
            help="Only every n-th job, from the i-th: i/n (0-based). Under torchrun: "
            "RANK/WORLD_SIZE."
        ),
    ] = None,
    model: ModelOpt = None,
    area: AreaOpt = None,
    fit: FitOpt = "crop",
    features: Annotated[str, typer.Option(help="mixed or separate audio features.")] = "mixed",
    steps: StepsOpt = None,
    no_sink: NoSinkOpt = False,
    no_rapr: NoRaprOpt = False,
    window: WindowOpt = None,
    max_distance: MaxDistanceOpt = None,
    cache_update: CacheUpdateOpt = None,
    talk_guidance: TalkGuidanceOpt = None,
    listen_guidance: ListenGuidanceOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    dit_device: DitDeviceOpt = None,
    vae_device: VaeDeviceOpt = None,
    compile: CompileOpt = False,
    crf: CrfOpt = 18,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Render every job of a manifest with one loaded model; skip jobs already rendered.

    Columns: id, image, agent_audio (required); user_audio, mask, seed, resolution.
    A failing job does not stop the others; the exit code is 6 if any failed.
    """
    from streamavatar_cli.pipeline import batch as batching
    from streamavatar_cli.pipeline.render import RenderJob

    rows = batching.read_manifest(manifest)
    chosen = batching.take_shard(
        rows, batching.parse_shard(shard) if shard else batching.shard_from_env()
    )
    loaded = _open_model(
        model, device or batching.default_device(), dtype, dit_device, vae_device, compile
    )
    stream = loaded.config.stream.replace(**_stream_overrides(
        None, steps, no_sink, no_rapr, window, max_distance, cache_update, talk_guidance,
        listen_guidance))  # fmt: skip
    template = RenderJob(
        image=manifest, agent_audio=manifest, output=out_dir, area=area,
        fit=_choice("--fit", fit, ("crop", "pad")),
        features=_choice("--features", features, ("mixed", "separate")), crf=crf,
    )  # fmt: skip
    _warn(_renderable_warnings(loaded), quiet or as_json)
    show = not (quiet or as_json)

    def started(row) -> None:
        if show:
            err_console.print(
                f"[bold]{row.id}[/bold] ({escape(str(manifest))} line {row.line})", soft_wrap=True
            )

    def finished(outcome) -> None:
        if show and outcome.status == "failed":
            err_console.print(f"  [red]failed:[/red] {escape(outcome.error)}", soft_wrap=True)

    outcomes = batching.run_batch(
        loaded, chosen, out_dir, stream=stream, template=template, force=force,
        on_start=started, on_done=finished,
    )  # fmt: skip
    failed = [o for o in outcomes if o.status == "failed"]
    if as_json:
        import dataclasses
        import json

        counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
        print(json.dumps({"jobs": [dataclasses.asdict(o) for o in outcomes], **counts}))
    elif not quiet:
        _batch_table(outcomes, len(rows))
    if failed:
        raise typer.Exit(EXIT_BATCH_FAILED)


def _batch_table(outcomes, total_rows: int) -> None:
    from rich.table import Table

    table = Table(title=f"batch: {len(outcomes)} of {total_rows} jobs in this shard")
    for column in ("id", "status", "video s", "RTF", "output / error"):
        table.add_column(column)
    colours = {"done": "green", "skipped": "cyan", "failed": "red"}
    for o in outcomes:
        table.add_row(
            o.id, f"[{colours[o.status]}]{o.status}[/]", f"{o.seconds:.1f}" if o.seconds else "",
            f"{o.rtf:.2f}" if o.rtf is not None else "", escape(o.error or o.output),
        )  # fmt: skip
    console.print(table)


@app.command()
def info() -> None:
    """Print versions, devices, the ffmpeg binary in use and the models in the weights folders."""
    from streamavatar_cli.diagnostics import collect_info

    for key, value in collect_info().items():
        console.print(f"[bold]{key}[/bold]: {value}", soft_wrap=True)
    _print_models()


@app.command()
def download(
    name: str = typer.Argument(..., help="Registry name or hub repo id (owner/name)."),
    dest_dir: str | None = typer.Option(
        None, "--dir", help="Where the model folder goes (default: weights/)."
    ),
    revision: str | None = typer.Option(None, help="Branch, tag or commit of the hub repo."),
    local_files_only: bool = typer.Option(
        False, "--local-files-only", help="No network: take the files from the local HF cache."
    ),
    with_text_encoder: bool = typer.Option(
        False, "--with-text-encoder", help="Also fetch the umT5 text encoder (Wan2.2, ~11 GB)."
    ),
    force: bool = typer.Option(False, "--force", help="Download again (repairs a bad download)."),
) -> None:
    """Download a model from the Hugging Face hub into weights/ and verify it.

    NAME is wan2.2-ti2v-5b, wan2.2-ti2v-5b-diffusers, wav2vec2-base-960h,
    chinese-wav2vec2-base, or the repo id (owner/name) of a StreamAvatar checkpoint.
    """
    from streamavatar_cli import hub

    entry = hub.entry_for(name)
    path = hub.download(
        name,
        **({"dest_dir": Path(dest_dir)} if dest_dir is not None else {}),
        revision=revision,
        local_files_only=local_files_only,
        with_text_encoder=with_text_encoder,
        force=force,
    )
    size = hub.human_size(hub.describe_model_folder(path).size_bytes)
    console.print(f"[green]verified[/green] {entry.repo_id} in {path} ({size})", soft_wrap=True)
    console.print(f"next: {entry.next_step.format(path=path)}", soft_wrap=True)


def _print_models() -> None:
    from streamavatar_cli import hub

    dirs = hub.weights_dirs()
    models = [m for d in dirs for m in hub.list_models(d)]
    if not models:
        console.print(
            f"[bold]models[/bold]: none found in {', '.join(map(str, dirs))}; get one with "
            "`streamavatar download NAME` (see `streamavatar download --help`), "
            "or render with --model random-tiny",
            soft_wrap=True,
        )
        return
    console.print("[bold]models[/bold]:")
    for m in models:
        note = f"  ({m.note})" if m.note else ""
        size = hub.human_size(m.size_bytes)
        console.print(f"  {m.name}  {m.kind}  {size}  {m.path}{note}", soft_wrap=True)


@app.command()
def mask(
    agent: str = typer.Argument(..., help="The avatar's own speech (any audio or video file)."),
    user: str | None = typer.Argument(None, help="The other person's speech (optional)."),
    output: str | None = typer.Option(
        None, "--output", "-o", help="Save the mask as JSON, the format `--mask FILE` reads."
    ),
    listen_when_silent: bool = typer.Option(
        False,
        "--listen-when-silent",
        help="One track: listen where it is silent (default: talk throughout). "
        "Two tracks always use voice activity.",
    ),
) -> None:
    """Show when the avatar talks and when it listens (the speak/listen mask)."""
    from streamavatar_cli.audio import (
        compute_speak_mask,
        format_timeline,
        load_audio,
        save_mask_file,
    )

    agent_wave = load_audio(agent)
    user_wave = load_audio(user) if user is not None else None
    speak = compute_speak_mask(agent_wave, user_wave, listen_when_silent=listen_when_silent)
    console.print(format_timeline(speak), soft_wrap=True, markup=False)
    if output is not None:
        save_mask_file(Path(output), speak)
        console.print(f"saved {output}", soft_wrap=True, markup=False)


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="Small sizes: a smoke run (under a minute)."),
    full: bool = typer.Option(False, "--full", help="Longer runs, less noise (about 15 min)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    flops: bool = typer.Option(
        False, "--flops", help="Instead: FLOPs per chunk and per decoded frame, and their RTF."
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        help="--flops: model preset (default wan2.2-ti2v-5b); --latency: model (default "
        "random-tiny); --ablation: model (default: the bundled one).",
    ),
    resolution: str | None = typer.Option(
        None,
        "--resolution",
        help="--flops: WxH in pixels (default 928x704); --latency: a square WxW (default 64x64).",
    ),
    tflops: float | None = typer.Option(
        None, "--tflops", help="--flops: sustained TFLOP/s for the RTF (default 400)."
    ),
    latency: bool = typer.Option(
        False, "--latency", help="Instead: live latency, audio fed at real time through a pipe."
    ),
    ablation: bool = typer.Option(
        False, "--ablation", help="Instead: sink/RAPR/listen ablation on held-out puppets."
    ),
    seconds: float | None = typer.Option(
        None, "--seconds", help="--ablation: stream length (default 180; --quick 30)."
    ),
    puppets: int | None = typer.Option(
        None, "--puppets", help="--ablation: held-out puppets (default 2; --quick 1)."
    ),
    sweep_seconds: float | None = typer.Option(
        None, "--sweep-seconds", help="--ablation: talk-only and D/window sweep length (60)."
    ),
    jobs: int | None = typer.Option(
        None, "--jobs", help="--ablation: worker processes (default: one per core)."
    ),
    variant_model: Annotated[
        list[str] | None,
        typer.Option(help="--ablation: NAME=FOLDER, a student trained differently (repeat)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="--ablation: write ablation.md/.json/.png, -frames.png here."),
    ] = None,
) -> None:
    """Measure the performance claims as ratios: flat streaming cost and memory, the KV
    cache's speed-up, ours vs diffusers. See docs/benchmarks.md."""
    import json

    from streamavatar_cli import bench as benchmarks
    from streamavatar_cli.video import parse_resolution

    ablation_only = {"--seconds": seconds, "--puppets": puppets, "--sweep-seconds": sweep_seconds,
                     "--jobs": jobs, "--variant-model": variant_model, "--out": out}  # fmt: skip
    if ablation:
        if full or flops or latency:
            raise typer.BadParameter(
                "excludes --full, --flops and --latency", param_hint="--ablation"
            )
        _bench_ablation(quick, as_json, model, out, seconds=seconds, puppets=puppets,
                        sweep_seconds=sweep_seconds, jobs=jobs, trained=variant_model)  # fmt: skip
        return
    for flag, value in ablation_only.items():
        if value not in (None, []):
            raise typer.BadParameter("only with --ablation", param_hint=flag)
    if latency:
        seconds = 8.0 if quick else 60.0 if full else 20.0
        width, height = parse_resolution(resolution) if resolution else (64, 64)
        if width != height:
            raise typer.BadParameter(f"{resolution}: --latency renders square frames, e.g. "
                                     f"{width}x{width}", param_hint="--resolution")  # fmt: skip
        result = benchmarks.live_latency(seconds=seconds, size=width, model=model or "random-tiny")
        line = json.dumps(result.to_dict()) if as_json else result.line()
        console.print(line, soft_wrap=True, markup=False, highlight=False)
        return
    if flops:
        options = {"model": model, "tflops": tflops}
        if resolution is not None:
            options["resolution"] = parse_resolution(resolution)
        report = benchmarks.flops_report(**{k: v for k, v in options.items() if v is not None})
        lines = [json.dumps(report.to_dict())] if as_json else report.lines()
        for line in lines:
            console.print(line, soft_wrap=True, markup=False, highlight=False)
        return
    if quick and full:
        raise typer.BadParameter("--quick and --full exclude each other")

    def show(result) -> None:
        console.print(result.line(), soft_wrap=True, markup=False)

    size = "quick" if quick else "full" if full else "default"
    results = benchmarks.run_suite(size, on_result=None if as_json else show)
    if as_json:
        print(json.dumps([r.to_dict() for r in results]))


def _bench_ablation(quick: bool, as_json: bool, model, out: Path | None, **settings) -> None:
    import json

    global _interrupted_message
    _interrupted_message = "interrupted: the ablation stopped before its tables (nothing written)"

    from streamavatar_cli.bench.ablation import (
        AblationPlan,
        parse_variant_model,
        run_ablation,
        save_ablation,
    )

    settings["trained"] = tuple(parse_variant_model(t) for t in settings["trained"] or ())
    settings = {k: v for k, v in settings.items() if v is not None}
    plan = (AblationPlan.quick(**settings) if quick else AblationPlan(**settings)).validate()
    progress = lambda p: err_console.print(p.line(), soft_wrap=True, markup=False)  # noqa: E731
    result = run_ablation(plan, model, on_progress=progress)
    if as_json:
        print(json.dumps(result.to_dict()))
    else:
        for line in result.lines():
            console.print(line, soft_wrap=True, markup=False, highlight=False)
    if out is not None:
        try:
            paths = save_ablation(result, out)
        except ModuleNotFoundError as e:
            err_console.print(f"no plots: {e}", soft_wrap=True, markup=False)
        else:
            err_console.print(f"wrote {', '.join(map(str, paths))}", soft_wrap=True, markup=False)


@app.command()
def train(
    stage: Annotated[
        str, typer.Argument(help="vae | teacher | ode-pairs | ode-init | distill | refine")
    ],
    config: Annotated[
        Path, typer.Option("--config", "-c", help="The stage's TOML config (configs/).")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder: checkpoints, log, model.")
    ],
    resume: bool = typer.Option(False, "--resume", help="Continue from the folder's checkpoint."),
    max_steps: int | None = typer.Option(
        None, "--max-steps", min=0, help="Stop after this many more steps (checkpoint kept)."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print parameters, memory estimate and step FLOPs; train nothing."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress line."),
) -> None:
    """Run one stage of the training pipeline (see docs/training.md)."""
    from streamavatar_cli.errors import check_input_file
    from streamavatar_cli.train import STAGES, TrainConfig, run_stage
    from streamavatar_cli.train import dry_run as plan

    _choice("stage", stage, STAGES)
    check_input_file(config, "config file", "a .toml file", "write the stage's settings into it")
    cfg = TrainConfig.load(config, stage)
    if dry_run:
        for line in plan(cfg).lines():
            console.print(line, soft_wrap=True, markup=False, highlight=False)
        return
    if quiet:
        run_stage(cfg, out, resume=resume, max_steps=max_steps)
    else:
        _train_with_progress(cfg, out, resume, max_steps)
    err_console.print(f"{stage}: done, output in {out}", soft_wrap=True, markup=False)


def _train_with_progress(cfg, out: Path, resume: bool, max_steps: int | None) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from streamavatar_cli.train import run_stage

    columns = (
        TextColumn(f"{cfg.stage}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        TextColumn("{task.fields[losses]}"),
    )  # fmt: skip
    with Progress(*columns, console=err_console, transient=False) as progress:
        task = progress.add_task(cfg.stage, total=None, losses="")

        def on_step(step: int, total: int, losses: dict[str, float]) -> None:
            text = "  ".join(f"{k} {v:.4g}" for k, v in losses.items())
            progress.update(task, completed=step, total=total, losses=text)

        run_stage(cfg, out, resume=resume, max_steps=max_steps, on_step=on_step)


puppet_app = typer.Typer(
    help="The puppet domain: procedural talking/listening people, their clips and metrics.",
    no_args_is_help=True,
)
app.add_typer(puppet_app, name="puppet")


@puppet_app.command("sample")
def puppet_sample(
    seed: Annotated[int, typer.Option("--seed", help="Clip seed: identity, conversation, motion.")],
    out: Annotated[Path, typer.Option("--output", "-o", help="Folder for the six files.")],
    seconds: float = typer.Option(8.0, "--seconds", min=0.04, help="Clip length."),
    size: str = typer.Option("256x256", "--size", help="Frame size WxH (even sides)."),
    espeak: bool | None = typer.Option(
        None, "--espeak/--no-espeak", help="Real TTS sentences (default: per seed, if installed)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing files."),
) -> None:
    """Write reference.png, agent.wav, user.wav, mask.json, clip.mp4 and state.json."""
    from streamavatar_cli.puppet import sample_clip
    from streamavatar_cli.puppet.files import write_sample
    from streamavatar_cli.video import parse_resolution

    clip = sample_clip(seed, seconds, parse_resolution(size), espeak=espeak)
    for path in write_sample(clip, out, overwrite=overwrite):
        console.print(f"wrote {path}", soft_wrap=True, markup=False)


@puppet_app.command("score")
def puppet_score(
    video: Annotated[
        Path, typer.Argument(help="A video of a puppet (a model render or a clip.mp4).")
    ],
    audio: Annotated[Path, typer.Option("--audio", "-a", help="The agent's speech.")],
    user_audio: Annotated[
        Path | None, typer.Option("--user-audio", "-u", help="The user's speech.")
    ] = None,
    mask: Annotated[
        Path | None, typer.Option("--mask", help="Talk/listen JSON (default: VAD).")
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option("--reference", help="Reference PNG (default: the first frame)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Lip-sync, listening motion, mouth while listening and identity drift, from pixels."""
    import json

    from streamavatar_cli.audio import load_audio, load_mask_file, num_video_frames
    from streamavatar_cli.puppet.files import score_file

    agent = load_audio(audio)
    user = load_audio(user_audio) if user_audio is not None else None
    speak = load_mask_file(mask, num_video_frames(len(agent))) if mask is not None else None
    scores = score_file(video, agent, user, speak, reference)
    if as_json:
        print(json.dumps(scores))
        return
    for key, value in scores.items():
        shown = f"{value:.4f}" if isinstance(value, float) else value
        console.print(f"{key:20s} {shown}", soft_wrap=True, markup=False)


@puppet_app.command("sheet")
def puppet_sheet(
    out: Annotated[Path, typer.Option("--output", "-o", help="PNG to write.")] = Path(
        "docs/puppets.png"
    ),
    seeds: int = typer.Option(8, "--seeds", min=1, help="Seeds 0..N-1."),
    size: str = typer.Option("192x192", "--size", help="Tile size WxH."),
) -> None:
    """A contact sheet: each seed's reference frame beside a talking pose."""
    from PIL import Image

    from streamavatar_cli.puppet.files import contact_sheet
    from streamavatar_cli.video import parse_resolution

    Image.fromarray(contact_sheet(list(range(seeds)), parse_resolution(size))).save(out)
    console.print(f"wrote {out}", soft_wrap=True, markup=False)


INTERRUPTED_MESSAGE = (
    "interrupted: the video in progress was discarded (finished ones are kept; rerun to continue)"
)
TERMINATED_MESSAGE = INTERRUPTED_MESSAGE.replace("interrupted:", "terminated (SIGTERM):")
LIVE_INTERRUPTED_MESSAGE = "interrupted: the live stream stopped (what was sent is kept)"
_interrupted_message = INTERRUPTED_MESSAGE
"""What Ctrl-C says: `render` switches to the live wording for stdout, .ts and HLS outputs."""


def _fail(message: str, code: int) -> None:
    """One line on stderr, whatever the message holds (newlines, [brackets] in paths)."""
    line = " | ".join(part.strip() for part in str(message).splitlines() if part.strip())
    err_console.print(f"[red]error:[/red] {escape(line)}", soft_wrap=True)
    sys.exit(code)


def _usage_error(e) -> None:
    """Click's usage errors as one line (not its four-line usage block), exit code kept."""
    ctx = getattr(e, "ctx", None)
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    _fail(e.format_message() + hint, e.exit_code)


def _interrupted() -> None:
    err_console.print(_interrupted_message, soft_wrap=True, markup=False)
    sys.exit(EXIT_INTERRUPTED)


def main() -> None:
    """Console-script entry point: run the app, map known errors to exit codes.

    Typer turns a KeyboardInterrupt inside a command into exit code 130 (not an exception),
    so the interruption message is printed for that code. SIGTERM raises `Terminated` in the
    main thread, which unwinds through the same cleanup (temp files, ffmpeg, worker thread).
    """
    raise_on_sigterm()
    try:
        # One program name in messages, also under `python -m streamavatar_cli`.
        code = app(prog_name="streamavatar", standalone_mode=False)
    except _ClickException as e:
        _usage_error(e)
    except (typer.Abort, KeyboardInterrupt):
        _interrupted()
    except Terminated:
        message = _interrupted_message.replace("interrupted:", "terminated (SIGTERM):")
        err_console.print(message, soft_wrap=True, markup=False)
        sys.exit(EXIT_TERMINATED)
    except StreamAvatarError as e:
        _fail(str(e), e.exit_code)
    except ValueError as e:
        _fail(str(e), 2)
    except Exception as e:  # noqa: BLE001 - the last line of defence for a 2 a.m. user
        if os.environ.get("STREAMAVATAR_DEBUG"):
            raise
        _fail(
            f"unexpected {type(e).__name__}: {e} (this is a bug; rerun with "
            "STREAMAVATAR_DEBUG=1 for the traceback and report it)",
            1,
        )
    if code == EXIT_INTERRUPTED:
        _interrupted()
    sys.exit(code if isinstance(code, int) else 0)

"""The `streamavatar` command: a thin Typer layer over the Python API.

It parses arguments, calls the library, prints. Errors the user can cause become one line on
stderr and a documented exit code (see `errors.py`); Ctrl-C exits 130.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer
from rich.console import Console

from streamavatar_cli import __version__
from streamavatar_cli.errors import EXIT_INTERRUPTED, StreamAvatarError

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


def _fail(message: str, code: int) -> None:
    err_console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    sys.exit(code)


def main() -> None:
    """Console-script entry point: run the app, map known errors to exit codes."""
    try:
        code = app(standalone_mode=False)
    except _ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except typer.Abort:
        err_console.print("interrupted: no output was written")
        sys.exit(EXIT_INTERRUPTED)
    except StreamAvatarError as e:
        _fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted: no output was written")
        sys.exit(EXIT_INTERRUPTED)
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
    sys.exit(code if isinstance(code, int) else 0)

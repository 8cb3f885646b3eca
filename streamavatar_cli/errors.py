"""Errors a user can cause, each with the exit code the CLI returns for it.

The library raises these (or plain `ValueError` for a bad value, which the CLI treats as bad
input); the CLI turns them into one line on stderr and the exit code below. The table is in
the README's Troubleshooting section.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path


class StreamAvatarError(Exception):
    """Base class: a failure with a message written for the person at the terminal."""

    exit_code = 1


class InputError(StreamAvatarError, ValueError):
    """A file or value given by the user is missing, unreadable or out of range."""

    exit_code = 2


def check_input_file(path: Path, what: str, expected: str, if_empty: str | None = None) -> None:
    """The checks every user-given input file gets first, with the same wording everywhere.

    `what` names the role ("audio file"), `expected` what to give instead of a directory ("an
    audio or video file"), `if_empty` the advice for a 0-byte file (None: empty is allowed and
    the parser reports it).
    """
    if not path.exists():
        raise InputError(f"{what} {path} does not exist: check the path.")
    if path.is_dir():
        raise InputError(f"{what} {path} is a directory: give {expected}.")
    if if_empty is not None and path.stat().st_size == 0:
        raise InputError(f"{what} {path} is empty (0 bytes): {if_empty}.")


class ModelError(StreamAvatarError, ValueError):
    """A model folder or checkpoint is missing, corrupt, or not what the command needs."""

    exit_code = 3


class OutputError(StreamAvatarError):
    """The output cannot be written (directory missing, read-only, file exists)."""

    exit_code = 4


class DownloadError(StreamAvatarError):
    """The hub could not be reached or the download did not verify."""

    exit_code = 5


EXIT_BATCH_FAILED = 6
"""`batch` finished, but at least one job failed (the summary says which)."""

EXIT_INTERRUPTED = 130
"""Ctrl-C (SIGINT), as shells report it."""

EXIT_TERMINATED = 143
"""SIGTERM (`timeout`, `kill`, schedulers, `docker stop`), as shells report it."""


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so every `with` block cleans up on the way out.

    A BaseException, like KeyboardInterrupt: `except Exception` handlers must not swallow it.
    """


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def raise_on_sigterm() -> None:
    """Turn SIGTERM into `Terminated` in the main thread, so `with` blocks (temp files, ffmpeg,
    worker pools) clean up instead of the process vanishing with its children left running."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)

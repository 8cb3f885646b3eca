"""Errors a user can cause, each with the exit code the CLI returns for it.

The library raises these (or plain `ValueError` for a bad value, which the CLI treats as bad
input); the CLI turns them into one line on stderr and the exit code below. The table is in
the README's Troubleshooting section.
"""

from __future__ import annotations


class StreamAvatarError(Exception):
    """Base class: a failure with a message written for the person at the terminal."""

    exit_code = 1


class InputError(StreamAvatarError, ValueError):
    """A file or value given by the user is missing, unreadable or out of range."""

    exit_code = 2


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

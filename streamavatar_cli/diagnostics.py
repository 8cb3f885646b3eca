"""Facts about this installation for `streamavatar info` and bug reports."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata

from streamavatar_cli import __version__


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped by imageio-ffmpeg (the only one the tool uses)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _ffmpeg_version(exe: str) -> str:
    try:
        out = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=10).stdout
    except OSError as e:
        return f"not runnable ({e})"
    return out.splitlines()[0] if out else "unknown"


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def devices() -> list[str]:
    import torch

    found = [f"cpu ({torch.get_num_threads()} threads)"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            found.append(f"cuda:{i} {props.name} {props.total_memory / 2**30:.0f} GiB")
    return found


def collect_info() -> dict[str, str]:
    import torch

    exe = ffmpeg_exe()
    return {
        "streamavatar": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": f"{torch.__version__} (cuda {torch.version.cuda or 'none'})",
        "transformers": _package_version("transformers"),
        "huggingface-hub": _package_version("huggingface-hub"),
        "devices": ", ".join(devices()),
        "ffmpeg": f"{exe} ({_ffmpeg_version(exe)})",
    }

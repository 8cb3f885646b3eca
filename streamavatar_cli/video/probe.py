"""Read a media file back with the bundled ffmpeg alone (imageio-ffmpeg ships no ffprobe).

Stream facts (codec, size, pixel format, rate) come from the stream lines `ffmpeg -i` prints;
counts are measured, not read from headers: frames by decoding the video to the null muxer,
audio by decoding to raw float samples and counting them. That makes `probe_media` the ground
truth the tests compare against ("exactly 37 frames", "exactly 1.48 s of audio").
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamavatar_cli.diagnostics import ffmpeg_exe
from streamavatar_cli.errors import InputError

_READ_CHUNK = 1 << 20


def ffmpeg_file_arg(path: str | Path) -> str:
    """A path as ffmpeg must be given it: "file:" + absolute, so that a name such as
    "take:2.mp4" or "-x.mp4" is not read as a protocol or an option."""
    return "file:" + os.path.abspath(path)


def _decode_command(path: Path) -> list[str]:
    return [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-i", ffmpeg_file_arg(path)]


@dataclass(frozen=True)
class MediaInfo:
    """What a media file holds. Video fields are None without a video stream, audio fields
    None without an audio stream. Durations are measured: `video_duration` = n_frames / fps,
    `audio_duration` = decoded samples / audio_rate."""

    width: int | None
    height: int | None
    fps: float | None
    n_frames: int | None
    video_duration: float | None
    audio_duration: float | None
    audio_rate: int | None
    video_codec: str | None
    pix_fmt: str | None
    audio_codec: str | None
    audio_channels: int | None = None


def _split_top_level(text: str) -> list[str]:
    """Split a stream description on ", " outside parentheses: "yuv420p(tv, bt709)" stays whole."""
    parts, depth, current = [], 0, []
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    parts.append("".join(current).strip())
    return parts


def _stream_lines(path: Path) -> tuple[str | None, str | None]:
    """The first video and first audio stream descriptions of `ffmpeg -i` (after "Video: ")."""
    # Without an output ffmpeg exits 1 after printing the input description: that is expected.
    result = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", ffmpeg_file_arg(path)],
        capture_output=True,
        text=True,
        errors="replace",
    )
    video = audio = None
    for line in result.stderr.splitlines():
        match = re.search(r"Stream #\d+:\d+\S*: (Video|Audio): (.*)", line)
        if match is None or "(attached pic)" in line:  # cover art is not the video
            continue
        if match.group(1) == "Video" and video is None:
            video = match.group(2)
        elif match.group(1) == "Audio" and audio is None:
            audio = match.group(2)
    if video is None and audio is None:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else "no message"
        raise InputError(f"{path} has no audio or video stream ffmpeg can read ({reason}).")
    return video, audio


def _parse_video(desc: str) -> dict:
    parts = _split_top_level(desc)
    size = next((m for p in parts[2:] if (m := re.match(r"(\d+)x(\d+)", p))), None)
    fps = next((m for p in parts if (m := re.fullmatch(r"([\d.]+)(k?) fps", p))), None)
    return {
        "video_codec": parts[0].split()[0],
        "pix_fmt": parts[1].split("(")[0].strip() if len(parts) > 1 else None,
        "width": int(size.group(1)) if size else None,
        "height": int(size.group(2)) if size else None,
        "fps": float(fps.group(1)) * (1000 if fps.group(2) else 1) if fps else None,
    }


def _channels(layout: str) -> int | None:
    named = {"mono": 1, "stereo": 2, "2.1": 3, "quad": 4, "5.0": 5, "5.1": 6, "7.1": 8}
    if layout.split("(")[0] in named:
        return named[layout.split("(")[0]]
    match = re.match(r"(\d+) channels", layout)
    return int(match.group(1)) if match else None


def _parse_audio(desc: str) -> dict:
    parts = _split_top_level(desc)
    rate = next((m for p in parts if (m := re.fullmatch(r"(\d+) Hz", p))), None)
    rate_index = next((i for i, p in enumerate(parts) if re.fullmatch(r"\d+ Hz", p)), None)
    layout = parts[rate_index + 1] if rate_index is not None and rate_index + 1 < len(parts) else ""
    return {
        "audio_codec": parts[0].split()[0],
        "audio_rate": int(rate.group(1)) if rate else None,
        "audio_channels": _channels(layout),
    }


def _count_frames(path: Path) -> int:
    """Decode the first video stream and count the frames, as they are (no rate conversion)."""
    cmd = _decode_command(path)
    cmd += ["-map", "0:v:0", "-fps_mode", "passthrough", "-f", "null", "-"]
    cmd += ["-nostats", "-progress", "pipe:1"]
    result = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    counts = re.findall(r"^frame=(\d+)$", result.stdout, flags=re.MULTILINE)
    if result.returncode != 0 or not counts:
        raise InputError(
            f"{path}: the video stream could not be decoded ({result.stderr.strip()})."
        )
    return int(counts[-1])


def _count_audio_samples(path: Path) -> int:
    """Decode the first audio stream to mono float32 at its own rate and count the samples."""
    cmd = _decode_command(path)
    cmd += ["-map", "0:a:0", "-ac", "1", "-f", "f32le", "-"]
    # Stream the samples through a small buffer: a long file need not fit in memory.
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        n_bytes = 0
        while chunk := proc.stdout.read(_READ_CHUNK):
            n_bytes += len(chunk)
        error = proc.stderr.read().decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        raise InputError(f"{path}: the audio stream could not be decoded ({error}).")
    return n_bytes // 4


def probe_media(path: str | Path) -> MediaInfo:
    """Stream facts and exact frame and sample counts of a media file (see the module doc)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist or is not a file.")
    video_desc, audio_desc = _stream_lines(path)
    fields: dict = {key: None for key in MediaInfo.__dataclass_fields__}
    if video_desc is not None:
        fields.update(_parse_video(video_desc))
        fields["n_frames"] = _count_frames(path)
        if fields["fps"]:
            fields["video_duration"] = fields["n_frames"] / fields["fps"]
    if audio_desc is not None:
        fields.update(_parse_audio(audio_desc))
        if fields["audio_rate"]:
            fields["audio_duration"] = _count_audio_samples(path) / fields["audio_rate"]
    return MediaInfo(**fields)


def read_video_frames(path: str | Path) -> np.ndarray:
    """Decode every frame of the first video stream to uint8 RGB [n, H, W, 3] (for tests and
    small clips: the whole video is held in memory)."""
    path = Path(path)
    info = probe_media(path)
    if info.width is None or info.height is None:
        raise InputError(f"{path} has no video stream.")
    cmd = _decode_command(path)
    cmd += ["-map", "0:v:0", "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    result = subprocess.run(cmd, capture_output=True)
    if result.returncode != 0:
        raise InputError(f"{path}: decoding failed ({result.stderr.decode(errors='replace')}).")
    n_frames = len(result.stdout) // (info.width * info.height * 3)
    pixels = np.frombuffer(result.stdout, np.uint8, count=n_frames * info.width * info.height * 3)
    return pixels.reshape(n_frames, info.height, info.width, 3)

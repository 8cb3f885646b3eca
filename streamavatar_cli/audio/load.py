"""Reading any audio (or video) file into the one waveform format the tool uses.

Every waveform inside streamavatar is float32, mono, 16 kHz (wav2vec2's native rate) and
loudness-normalised, so VAD thresholds, feature statistics and the agent/user loudness
comparison see the same level whatever the recording gain was. Decoding goes through the
ffmpeg binary bundled with imageio-ffmpeg (`diagnostics.ffmpeg_exe`): one decoder for wav,
mp3, m4a, flac, ogg/opus and the audio track of video files, no system ffmpeg needed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from streamavatar_cli.config import AUDIO_SAMPLE_RATE
from streamavatar_cli.errors import InputError, check_input_file

TARGET_DBFS = -23.0
"""RMS level of the active (non-silent) part after normalisation (EBU R128's -23 LUFS figure)."""

PEAK_LIMIT = 0.99
"""Normalisation never scales the peak above this, so it never clips."""

GATE_BLOCK_S = 0.02
"""Blocks (20 ms) on which the silence gate decides."""

GATE_ABS_DBFS = -70.0
"""Blocks quieter than this are silence; audio with no louder block is left unchanged."""

GATE_REL_DB = -20.0
"""Blocks this far below the mean power of the absolutely-gated blocks are pauses, not speech."""


def _db_to_amplitude(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def _decode_error(path: Path, stderr: str) -> InputError:
    """Turn ffmpeg's stderr into one sentence a user can act on."""
    if "matches no streams" in stderr or "does not contain any stream" in stderr:
        return InputError(f"{path} has no audio stream: give a file that contains sound")
    if "Permission denied" in stderr:
        return InputError(f"cannot read {path}: permission denied; check its permissions")
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    detail = lines[0] if lines else "unknown error"
    return InputError(
        f"cannot decode {path} as audio ({detail}): is it a corrupt or unsupported file?"
    )


def decode_audio(path: str | Path) -> np.ndarray:
    """Decode the first audio stream of `path` to float32 mono 16 kHz, without normalisation.

    ffmpeg down-mixes (`-ac 1`), resamples (`-ar 16000`) and writes raw f32le to a pipe, so no
    temporary file is created and any container ffmpeg reads works.
    """
    from streamavatar_cli.diagnostics import ffmpeg_exe

    path = Path(path)
    check_input_file(path, "audio file", "an audio or video file", "give a real recording")
    cmd = [
        ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error",
        "-i", str(path), "-map", "0:a:0", "-vn",
        "-ac", "1", "-ar", str(AUDIO_SAMPLE_RATE), "-f", "f32le", "-",
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, check=False)
    except OSError as e:
        raise InputError(f"cannot run ffmpeg to read {path}: {e}") from e
    if proc.returncode != 0:
        raise _decode_error(path, proc.stderr.decode("utf-8", errors="replace"))
    wave = np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)
    if wave.size == 0:
        raise InputError(f"{path} contains no audio samples: give a non-empty recording")
    return wave


def active_rms(wave: np.ndarray) -> float:
    """RMS of the non-silent part of `wave`, or 0.0 if it is all silence.

    A two-stage gate in the spirit of EBU R128 (simplified to RMS, no K-weighting): 20 ms
    blocks under -70 dBFS are silence, then blocks more than 20 dB below the mean of the rest
    are pauses. Measuring only the active part makes a short sentence in a long silence
    normalise to the same level as continuous speech.
    """
    block = int(GATE_BLOCK_S * AUDIO_SAMPLE_RATE)
    n_blocks = max(1, len(wave) // block)
    padded = np.zeros(n_blocks * block, dtype=np.float64)
    usable = min(len(wave), len(padded))
    padded[:usable] = wave[:usable]
    power = (padded.reshape(n_blocks, block) ** 2).mean(axis=1)
    gated = power[power >= _db_to_amplitude(GATE_ABS_DBFS) ** 2]
    if gated.size == 0:
        return 0.0
    gated = gated[gated >= gated.mean() * 10.0 ** (GATE_REL_DB / 10.0)]
    return float(np.sqrt(gated.mean()))


def normalize_loudness(wave: np.ndarray) -> np.ndarray:
    """Scale `wave` so its active part has RMS -23 dBFS, with the peak kept below 0.99.

    Pure scaling (no compression), so the waveform shape is untouched; a very peaky signal
    ends up quieter than -23 dBFS rather than clipped. Silence (nothing above -70 dBFS) is
    returned unchanged: there is nothing to measure and no division by zero.
    """
    wave = np.asarray(wave, dtype=np.float32)
    rms = active_rms(wave)
    if rms == 0.0:
        return wave.copy()
    gain = _db_to_amplitude(TARGET_DBFS) / rms
    peak = float(np.abs(wave).max())
    gain = min(gain, PEAK_LIMIT / peak)
    return (wave * np.float32(gain)).astype(np.float32)


def load_audio(path: str | Path) -> np.ndarray:
    """Load any file ffmpeg reads as float32 mono 16 kHz, loudness-normalised.

    Raises `InputError` for a missing path, a directory, an empty, corrupt or unreadable
    file, a file without an audio stream, and audio with zero samples. Very short audio
    loads fine; deciding what is too short is the caller's business.
    """
    return normalize_loudness(decode_audio(path))


def mix_tracks(agent: np.ndarray, user: np.ndarray | None) -> np.ndarray:
    """The agent + user mix (what the MP4 plays and, per the paper, what features are taken of).

    As long as the longer track (the shorter is zero-padded) and clipped to [-1, 1].
    """
    agent = np.asarray(agent, dtype=np.float32)
    if user is None:
        return np.clip(agent, -1.0, 1.0)
    user = np.asarray(user, dtype=np.float32)
    mix = np.zeros(max(len(agent), len(user)), dtype=np.float32)
    mix[: len(agent)] += agent
    mix[: len(user)] += user
    return np.clip(mix, -1.0, 1.0)

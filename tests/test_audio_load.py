"""Loading audio: every format ffmpeg reads, loudness normalisation, clear errors, the mix."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from streamavatar_cli.audio import load_audio, mix_tracks, normalize_loudness
from streamavatar_cli.audio.load import TARGET_DBFS, active_rms
from streamavatar_cli.diagnostics import ffmpeg_exe
from streamavatar_cli.errors import InputError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
AGENT = EXAMPLES / "agent.wav"
DURATION_S = 7.5

# name -> ffmpeg output arguments (input: examples/agent.wav, 16 kHz mono PCM16)
FORMATS = {
    "u8.wav": ["-c:a", "pcm_u8"],
    "s16.wav": ["-c:a", "pcm_s16le"],
    "s24.wav": ["-c:a", "pcm_s24le"],
    "f32.wav": ["-c:a", "pcm_f32le"],
    "stereo48k.wav": ["-ar", "48000", "-ac", "2"],
    "speech.mp3": ["-c:a", "libmp3lame", "-b:a", "64k"],
    "speech.m4a": ["-c:a", "aac", "-b:a", "64k"],
    "speech.flac": ["-c:a", "flac"],
    "speech.ogg": ["-c:a", "libopus", "-b:a", "32k"],
}


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-y", *args], check=True)


def gray_video_args(seconds: float) -> list[str]:
    return ["-f", "lavfi", "-i", f"color=c=gray:s=64x64:r=25:d={seconds}"]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("media")
    for name, args in FORMATS.items():
        ffmpeg("-i", str(AGENT), *args, str(folder / name))
    h264 = ["-c:v", "libx264", "-pix_fmt", "yuv420p"]
    ffmpeg(*gray_video_args(DURATION_S), "-i", str(AGENT), "-c:a", "aac", *h264, "-shortest",
           str(folder / "talk.mp4"))  # fmt: skip
    ffmpeg(*gray_video_args(1.0), *h264, str(folder / "silent.mp4"))
    return folder


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return load_audio(AGENT)


@pytest.mark.parametrize("name", [*FORMATS, "talk.mp4"])
def test_every_format_loads_as_16k_mono_aligned_with_the_original(media, reference, name):
    wave = load_audio(media / name)
    assert wave.dtype == np.float32 and wave.ndim == 1
    # 16 kHz: a wrong rate would change the sample count by the rate ratio (3x for 48 kHz)
    assert abs(len(wave) / 16000 - DURATION_S) < 0.03
    n = min(len(wave), len(reference))
    # same content at the same time: lossy codecs still correlate > 0.99 here
    assert np.corrcoef(wave[:n], reference[:n])[0, 1] > 0.98
    assert abs(20 * np.log10(active_rms(wave)) - TARGET_DBFS) < 0.5


def test_stereo_is_downmixed(tmp_path, reference):
    silence = np.zeros_like(sf.read(AGENT, dtype="float32")[0])
    speech = sf.read(AGENT, dtype="float32")[0]
    sf.write(tmp_path / "lr.wav", np.stack([speech, silence], axis=1), 16000)
    wave = load_audio(tmp_path / "lr.wav")
    # left-only speech survives the down-mix (and the level is normalised back)
    assert np.corrcoef(wave, reference)[0, 1] > 0.999


def test_very_short_audio_loads(tmp_path):
    sf.write(tmp_path / "blip.wav", 0.1 * np.sin(np.arange(800) / 5.0), 16000)
    assert len(load_audio(tmp_path / "blip.wav")) == 800


def test_quiet_and_loud_recordings_normalise_to_the_same_level(tmp_path, reference):
    speech = sf.read(AGENT, dtype="float32")[0]
    for gain in (0.03, 1.9):  # active level -57 and -21 dBFS
        sf.write(tmp_path / "g.wav", speech * gain, 16000, subtype="FLOAT")
        wave = load_audio(tmp_path / "g.wav")
        # 1 %: at -57 dBFS a few 20 ms blocks cross the absolute silence gate (measured 0.6 %)
        assert np.abs(wave - reference).max() < 0.01 * np.abs(reference).max()


def test_normalisation_keeps_silence_and_limits_the_peak():
    silence = np.zeros(16000, dtype=np.float32)
    assert not normalize_loudness(silence).any()
    click = np.zeros(16000, dtype=np.float32)
    click[8000] = 0.5  # its 20 ms block is at -31 dBFS: +8 dB would push the peak to 1.25
    out = normalize_loudness(click)
    assert 0.98 < np.abs(out).max() < 1.0


def test_mix_is_as_long_as_the_longer_track_and_clipped():
    agent = np.full(10, 0.8, dtype=np.float32)
    user = np.full(4, 0.5, dtype=np.float32)
    mix = mix_tracks(agent, user)
    assert len(mix) == 10 and mix.dtype == np.float32
    np.testing.assert_allclose(mix[:4], 1.0)  # 1.3 clipped
    np.testing.assert_allclose(mix[4:], 0.8)
    assert len(mix_tracks(user, agent)) == 10
    np.testing.assert_allclose(mix_tracks(-agent, None), -0.8)


def _write_garbage(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(4000))


@pytest.mark.parametrize(
    "make, name, message",
    [
        (lambda p: None, "missing.wav", "does not exist"),
        (lambda p: p.mkdir(), "folder.wav", "is a directory"),
        (lambda p: p.write_bytes(b""), "zero.wav", "empty"),
        (_write_garbage, "corrupt.mp3", "cannot decode"),
        (lambda p: sf.write(p, np.zeros(0), 16000), "nothing.wav", "no audio samples"),
    ],
)
def test_bad_files_raise_one_clear_input_error(tmp_path, make, name, message):
    path = tmp_path / name
    make(path)
    with pytest.raises(InputError, match=message) as info:
        load_audio(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_video_without_audio_says_so(media):
    with pytest.raises(InputError, match="has no audio stream"):
        load_audio(media / "silent.mp4")

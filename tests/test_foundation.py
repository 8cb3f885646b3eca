"""The installable package, its command, its config contract and the bundled examples."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import soundfile as sf
from PIL import Image

from streamavatar_cli import __version__
from streamavatar_cli.config import MODEL_PRESETS, DiTConfig, ModelConfig, StreamConfig


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streamavatar_cli", *args], capture_output=True, text=True
    )


def test_version_and_help_list_commands():
    out = run_cli("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"streamavatar {__version__}"
    out = run_cli("--help")
    assert out.returncode == 0
    assert "info" in out.stdout


def test_unknown_command_is_a_usage_error():
    out = run_cli("no-such-command")
    assert out.returncode == 2
    assert "No such command" in out.stderr
    assert "Traceback" not in out.stderr


def test_info_names_ffmpeg_and_torch():
    out = run_cli("info")
    assert out.returncode == 0, out.stderr
    assert "ffmpeg" in out.stdout and "torch" in out.stdout


@pytest.mark.parametrize("name", sorted(MODEL_PRESETS))
def test_model_config_round_trips_through_json(name, tmp_path):
    cfg = MODEL_PRESETS[name]
    cfg.save(tmp_path / "config.json")
    assert ModelConfig.load(tmp_path / "config.json") == cfg


def test_config_rejects_unknown_keys_by_name(tmp_path):
    data = MODEL_PRESETS["tiny"].to_dict()
    data["dit"]["num_layer"] = 3  # typo of num_layers
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="num_layer"):
        ModelConfig.load(tmp_path / "config.json")


def test_config_rejects_mismatched_latent_channels():
    data = MODEL_PRESETS["tiny"].to_dict()
    data["dit"]["in_dim"] = 48
    with pytest.raises(ValueError, match="z_dim"):
        ModelConfig.from_dict(data)


def test_stream_sigmas_follow_the_shifted_schedule():
    cfg = StreamConfig()
    # sigma = 5u / (1 + 4u): u = 1 -> 1, u = 0.75 -> 0.9375, u = 0.5 -> 0.8333...
    assert cfg.sigmas() == pytest.approx((1.0, 0.9375, 2.5 / 3))
    assert cfg.sink_frames == 4  # the paper's "4-frame reference sink"
    with pytest.raises(ValueError, match="timesteps"):
        StreamConfig(timesteps=(500.0, 750.0, 1000.0)).validate()
    with pytest.raises(ValueError, match="cache_update"):
        cfg.replace(cache_update="dirty")


def test_listen_guidance_steps_are_checked_and_counted_from_the_first_step():
    cfg = StreamConfig(listen_guidance=4.0, listen_guidance_steps=2)
    assert [cfg.listen_guided(k) for k in range(3)] == [True, True, False]
    every = dataclasses.replace(cfg, listen_guidance_steps=None)  # replace() skips None
    assert all(every.listen_guided(k) for k in range(3))
    assert not any(StreamConfig(listen_guidance_steps=2).listen_guided(k) for k in range(3))
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="listen_guidance_steps"):
            StreamConfig(listen_guidance_steps=bad).validate()
    with pytest.raises(ValueError, match="listen_guidance=-1"):
        cfg.replace(listen_guidance=-1.0)
    assert StreamConfig.from_dict(cfg.to_dict()) == cfg  # as config.json stores it


def test_5b_preset_has_the_published_dims():
    cfg = DiTConfig.preset("wan2.2-ti2v-5b")
    assert (cfg.dim, cfg.num_layers, cfg.num_heads, cfg.ffn_dim) == (3072, 30, 24, 14336)
    assert cfg.head_dim == 128
    assert MODEL_PRESETS["wan2.2-ti2v-5b"].pixel_stride == 32


def test_examples_are_16k_mono_speech_with_alternating_turns(examples_dir):
    truth = json.loads((examples_dir / "segments.json").read_text())
    for track in ("agent", "user"):
        info = sf.info(examples_dir / f"{track}.wav")
        assert (info.samplerate, info.channels) == (16000, 1)
        assert 2.0 <= info.duration <= 15.0
    turns = sorted(
        (start, end, track) for track, segs in truth["segments"].items() for start, end in segs
    )
    assert [t[2] for t in turns] == ["agent", "user", "agent"]
    assert all(a[1] < b[0] for a, b in zip(turns, turns[1:], strict=False)), (
        "turns must not overlap"
    )
    with Image.open(examples_dir / "astronaut.png") as im:
        assert im.size == (512, 512)

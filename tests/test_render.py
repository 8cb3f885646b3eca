"""`render`: exact frame counts and audio length, one or two tracks, the two-thread pipeline,
checkpoint kinds, and the command line (--json, exit codes)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamavatar_cli.audio import load_audio, mix_tracks
from streamavatar_cli.errors import ModelError
from streamavatar_cli.pipeline.model import load_model, random_tiny_model, save_model
from streamavatar_cli.pipeline.render import RenderJob, render
from streamavatar_cli.video import probe_media, read_video_frames

SMALL = (64, 64)  # keeps each render to about a second on a CPU


@pytest.fixture(scope="module")
def model():
    return random_tiny_model(seed=0)


def job(examples_dir: Path, output: Path, **kw) -> RenderJob:
    defaults = dict(
        image=examples_dir / "astronaut.png",
        agent_audio=examples_dir / "agent.wav",
        user_audio=examples_dir / "user.wav",
        output=output,
        resolution=SMALL,
    )
    defaults.update(kw)
    return RenderJob(**defaults)


def test_two_tracks_give_exact_frames_and_the_mixed_audio(model, examples_dir, tmp_path):
    out = tmp_path / "two.mp4"
    result = render(model, job(examples_dir, out))
    mix = mix_tracks(load_audio(examples_dir / "agent.wav"), load_audio(examples_dir / "user.wav"))
    seconds = len(mix) / 16000
    info = probe_media(out)
    assert info.fps == 25
    assert info.n_frames == round(seconds * 25) == result.frames
    assert (info.width, info.height) == SMALL
    assert info.audio_duration == pytest.approx(seconds, abs=1 / 16000)
    assert (info.video_codec, info.pix_fmt, info.audio_codec) == ("h264", "yuv420p", "aac")
    assert result.chunks == 16  # 188 frames -> 47 latents -> 16 chunks of 3
    assert set(result.rtf) == {"dit", "vae", "total"} and result.ffd > 0
    assert not list(tmp_path.glob(".*tmp*")), "no temp file may remain"


def test_one_track_and_odd_length(model, examples_dir, tmp_path):
    """1.3 s of agent audio alone: round(1.3 * 25) = 33 frames (not a multiple of 12)."""
    import soundfile as sf

    wave, rate = sf.read(examples_dir / "agent.wav", dtype="float32")
    short = tmp_path / "short.wav"
    sf.write(short, wave[: int(1.3 * rate)], rate)
    out = tmp_path / "one.mp4"
    result = render(model, job(examples_dir, out, agent_audio=short, user_audio=None))
    info = probe_media(out)
    assert info.n_frames == 33 == result.frames
    assert info.audio_duration == pytest.approx(1.3, abs=1 / 16000)


def test_two_thread_pipeline_gives_the_same_frames(model, examples_dir, tmp_path):
    seq = render(model, job(examples_dir, tmp_path / "seq.mp4"), pipelined=False)
    par = render(model, job(examples_dir, tmp_path / "par.mp4"), pipelined=True)
    assert par.settings["pipelined"] and not seq.settings["pipelined"]
    a, b = read_video_frames(tmp_path / "seq.mp4"), read_video_frames(tmp_path / "par.mp4")
    assert a.shape == b.shape and np.array_equal(a, b)


def test_seed_changes_the_video_and_a_seed_repeats_it(model, examples_dir, tmp_path):
    stream = model.config.stream
    render(model, job(examples_dir, tmp_path / "a.mp4"), stream.replace(seed=1))
    render(model, job(examples_dir, tmp_path / "b.mp4"), stream.replace(seed=1))
    render(model, job(examples_dir, tmp_path / "c.mp4"), stream.replace(seed=2))
    a, b, c = (read_video_frames(tmp_path / f"{n}.mp4") for n in "abc")
    assert np.array_equal(a, b)
    assert not np.array_equal(a[1:], c[1:])  # frame 0 is the reference: same for any seed


def test_a_saved_student_folder_renders_and_teachers_are_refused(model, examples_dir, tmp_path):
    folder = save_model(model, tmp_path / "student")
    loaded = load_model(folder)
    out = tmp_path / "student.mp4"
    result = render(loaded, job(examples_dir, out))
    assert any("never trained" in w for w in result.warnings)
    assert np.array_equal(
        read_video_frames(out),
        read_video_frames(_render_again(model, examples_dir, tmp_path / "mem.mp4")),
    )
    for kind in ("teacher", "base"):
        teacher = dataclasses.replace(loaded, config=dataclasses.replace(loaded.config, kind=kind))
        with pytest.raises(ModelError, match=f"{kind} checkpoint.*streamavatar train"):
            render(teacher, job(examples_dir, tmp_path / f"{kind}.mp4"))
        assert not (tmp_path / f"{kind}.mp4").exists()


def test_a_model_with_more_audio_memory_renders_from_its_saved_folder(examples_dir, tmp_path):
    """The audio window is the model's (config.json): a DiT whose audio input is 16 frames,
    12 of them before its latent, renders with the right windows (the wrong ones would not
    fit its audio_proj) and gives the same frame count."""
    import torch

    from streamavatar_cli.models import WanDiT
    from streamavatar_cli.pipeline.model import StreamAvatarModel

    tiny = random_tiny_model(seed=0)
    dit_config = dataclasses.replace(tiny.config.dit, audio_window=16, audio_lookahead=0)
    torch.manual_seed(1)
    dit = WanDiT(dit_config).eval().requires_grad_(False)
    config = dataclasses.replace(tiny.config, dit=dit_config)
    wide = StreamAvatarModel(config, dit, tiny.vae, source="test", untrained=True)
    loaded = load_model(save_model(wide, tmp_path / "wide"))
    assert loaded.config.dit.audio_frames.past == 12
    result = render(loaded, job(examples_dir, tmp_path / "wide.mp4"))
    assert probe_media(tmp_path / "wide.mp4").n_frames == result.frames == 188


def _render_again(model, examples_dir, out):
    render(model, job(examples_dir, out))
    return out


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "streamavatar_cli", *args], capture_output=True, text=True, cwd=cwd
    )


def test_cli_json_output_parses_and_describes_the_video(examples_dir, tmp_path):
    out = tmp_path / "cli.mp4"
    proc = run_cli(
        "render", "-i", str(examples_dir / "astronaut.png"), "-a", str(examples_dir / "agent.wav"),
        "-u", str(examples_dir / "user.wav"), "-o", str(out), "--model", "random-tiny",
        "--resolution", "64x64", "--steps", "2", "--no-rapr", "--talk-guidance", "1.5",
        "--listen-guidance", "2", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["settings"]["stream"]["talk_guidance"] == 1.5
    assert data["settings"]["stream"]["listen_guidance"] == 2.0
    assert data["output"] == str(out) and data["frames"] == probe_media(out).n_frames == 188
    assert data["model"] == "random-tiny"
    assert data["settings"]["stream"]["steps"] == 2 and data["settings"]["stream"]["rapr"] is False
    assert {"dit", "vae", "total"} <= set(data["rtf"]) and data["ffd"] > 0
    assert any("UNTRAINED" in w for w in data["warnings"])


def test_cli_refuses_existing_output_and_missing_model(examples_dir, tmp_path):
    out = tmp_path / "exists.mp4"
    out.write_bytes(b"keep me")
    args = [
        "render",
        "-i",
        str(examples_dir / "astronaut.png"),
        "-a",
        str(examples_dir / "agent.wav"),
    ]
    proc = run_cli(*args, "-o", str(out), "--model", "random-tiny")
    assert proc.returncode == 4 and "--overwrite" in proc.stderr
    assert out.read_bytes() == b"keep me"
    proc = run_cli(*args, "-o", str(tmp_path / "new.mp4"), "--model", str(tmp_path / "nope"))
    assert proc.returncode == 3 and "nope" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "new.mp4").exists()

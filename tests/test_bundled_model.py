"""The committed model `weights/streamavatar-tiny`: it loads, it is the default, it renders
fast, it keeps the identity of puppets it never saw, and its mouth follows the agent's speech
and shuts while it listens (loose bounds that the random model of the same family fails)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tiny_model_bench

from streamavatar_cli import hub
from streamavatar_cli.models import WanVAE
from streamavatar_cli.pipeline.model import load_model, open_model, random_tiny_model
from streamavatar_cli.puppet.evaluate import (
    EVAL_SEED_BASE,
    puppet_case,
    score_stream,
    score_truth,
    score_vae_round_trip,
)
from streamavatar_cli.video.probe import probe_media

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "weights" / "streamavatar-tiny"
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def model():
    return load_model(BUNDLED)


def test_bundled_weights_are_small_and_a_trained_student(model):
    size = sum(f.stat().st_size for f in BUNDLED.iterdir() if f.is_file())
    assert size <= 30 * 2**20
    assert model.config.kind == "student" and model.config.audio_trained
    assert model.config.domain == "puppet"
    assert (BUNDLED / "README.md").is_file()


def test_it_is_the_default_model(monkeypatch, tmp_path):
    monkeypatch.delenv("STREAMAVATAR_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./weights here: the checkout's weights/ is found
    assert hub.resolve_model(None).resolve() == BUNDLED.resolve()


def test_render_without_model_flag_renders_two_seconds(tmp_path):
    agent, rate = sf.read(EXAMPLES / "conversation-agent.wav", dtype="float32")
    user, _ = sf.read(EXAMPLES / "conversation-user.wav", dtype="float32")
    sf.write(tmp_path / "a.wav", agent[: 2 * rate], rate)
    sf.write(tmp_path / "u.wav", user[: 2 * rate], rate)
    out = tmp_path / "demo.mp4"
    env = {k: v for k, v in os.environ.items() if k != "STREAMAVATAR_MODEL"}
    proc = subprocess.run(
        [sys.executable, "-m", "streamavatar_cli", "render", "-i", str(EXAMPLES / "puppet.png"),
         "-a", str(tmp_path / "a.wav"), "-u", str(tmp_path / "u.wav"), "-o", str(out), "--quiet"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    info = probe_media(out)
    assert info.n_frames == 50 and (info.width, info.height) == (128, 128)


HELD_OUT = tuple(range(10))  # the evaluation seeds 100000-100009 of the card: never trained on


def held_out_case(k: int):
    """Synthetic speech only (no espeak-ng), so the conversation is the same on every machine."""
    return puppet_case(EVAL_SEED_BASE + k, seconds=12.0, size=(128, 128), espeak=False)


@pytest.fixture(scope="module")
def held_out_scores(model) -> list[dict]:
    """Puppets the model never saw, streamed for 12 s each from their reference image alone."""
    return [score_stream(model, held_out_case(k)) for k in HELD_OUT]


def keeps_the_identity(scores: dict) -> bool:
    """Frames close to the ground-truth render of the same puppet, pixel for pixel (PSNR) and
    in structure (SSIM); the random model of the same family scores about 8.5 dB and 0.03."""
    return scores["psnr"] > 16.0 and scores["ssim"] > 0.45


def talks_and_listens(scores: list[dict]) -> bool:
    """Mean lip-sync over the streams above 0.3 (these ten at 12 s: 0.62, per puppet
    0.40-0.82; the weights before 0.58, 0.48-0.76; an ODE-init student before them 0.46,
    0.03-0.66), and on every stream the mouth opens less while listening than while talking.
    Ten streams, not four: that ODE-init student scored 0.03 on one puppet and 0.296 on the
    first four (these weights 0.57)."""
    lip = float(np.mean([s["lip_sync"] for s in scores]))
    return lip > 0.3 and all(s["mouth_listen"] < s["mouth_talk"] for s in scores)


def test_held_out_puppets_keep_their_identity(held_out_scores):
    for scores in held_out_scores:
        assert keeps_the_identity(scores), {k: scores[k] for k in ("psnr", "ssim")}


def test_held_out_puppets_talk_and_listen(held_out_scores):
    assert talks_and_listens(held_out_scores), [
        {k: round(s[k], 3) for k in ("lip_sync", "mouth_talk", "mouth_listen")}
        for s in held_out_scores
    ]


def example_case():
    """The demo's inputs, as the model card's evaluation builds them."""
    return tiny_model_bench().example_case((128, 128))


def test_the_teachers_listening_window_is_all_settled_listening():
    """`teacher-guidance --listening` reads nods where the conversation listens: the chosen
    window starts on a latent boundary inside the listening turn, carries its own audio and
    the reference as frame 0."""
    from streamavatar_cli.audio import SAMPLES_PER_FRAME
    from streamavatar_cli.puppet.evaluate import Case

    n = 200
    mask = np.ones(n, np.int8)
    mask[100:180] = 0  # listening from 4 s to 7.2 s
    truth = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 8, 8, 3))
    agent = np.arange(n * SAMPLES_PER_FRAME, dtype=np.float32)
    reference = np.full((8, 8, 3), 255, np.uint8)
    case = Case("c", reference, agent, -agent, mask, truth.copy(), 0)
    window = tiny_model_bench().listening_window(case)
    t0 = int(window.truth[1, 0, 0, 0]) - 1
    assert t0 % 4 == 0 and 100 + 12 <= t0 and t0 + 48 < 180
    assert len(window.mask) == 49 and not window.mask.any()
    assert (window.truth[0] == reference).all()
    assert window.agent[0] == t0 * SAMPLES_PER_FRAME
    assert len(window.agent) == len(window.user) == 49 * SAMPLES_PER_FRAME


@pytest.fixture(scope="module")
def example_scores(model) -> dict:
    """The demo's stream, rendered once for the tests that read it."""
    return score_stream(model, example_case())


def test_the_example_conversation_talks_and_listens(example_scores):
    """The demo itself: examples/puppet.png (seed 100003) and 16 s of espeak-ng speech
    (lip-sync 0.63 on the card)."""
    scores = example_scores
    assert talks_and_listens([scores]), {
        k: round(scores[k], 3) for k in ("lip_sync", "mouth_talk", "mouth_listen")
    }


def test_the_example_conversation_nods_while_listening(model, example_scores):
    """The listen branch at work on the demo: the head moves more while listening with the
    user's speech than with the listen features zeroed (5.2 against 0.7 with the default
    listen guidance; weights of 2026-12-06 moved it as much either way: 2.06 against 2.05),
    and head + hands move at least 2x as much, issue 13's listening target (9.6 against 4.2,
    2.26x; 1.97x at listen guidance 16, which is why the default is 20)."""
    talk_only = score_stream(model, example_case(), talk_only=True)
    head, motion = example_scores["listen_head_motion"], example_scores["listen_motion"]
    assert head > 1.5 * talk_only["listen_head_motion"], (head, talk_only)
    assert motion > 2.0 * talk_only["listen_motion"], (motion, talk_only)


def test_a_random_model_fails_the_same_bounds():
    """The bounds above mean something: the untrained model of the same family fails them."""
    scores = score_stream(random_tiny_model(), held_out_case(HELD_OUT[0]))
    assert not keeps_the_identity(scores)
    assert not talks_and_listens([scores])


def test_the_vae_ceiling_row_reads_a_trained_vae_above_a_random_one(model):
    """The model card's "through the VAE" row: the bundled VAE keeps the puppet (about 18 dB
    on this one), a random VAE of the same family does not."""
    case = puppet_case(EVAL_SEED_BASE, seconds=2.0, size=(128, 128), espeak=False)
    trained = score_vae_round_trip(model.vae, case)
    assert trained["psnr"] > 16.0 and trained["mouth_talk"] > 0.1
    assert 0.0 < trained["lip_sync_hold"] < score_truth(case)["lip_sync"]
    assert trained["mouth_group_corr"] > 0.5
    torch.manual_seed(0)
    assert score_vae_round_trip(WanVAE(model.config.vae).eval(), case)["psnr"] < 12.0


def test_default_open_model_is_the_bundled_one(monkeypatch):
    monkeypatch.delenv("STREAMAVATAR_MODEL", raising=False)
    assert open_model(None).config.name == "streamavatar-tiny"
    assert np.isfinite(sum(p.sum().item() for p in open_model(None).dit.parameters()))

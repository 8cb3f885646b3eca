"""Puppet metrics from pixels, their validation against ground truth, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from streamavatar_cli import cli
from streamavatar_cli.audio import load_mask_file
from streamavatar_cli.puppet import sample_clip
from streamavatar_cli.puppet.files import SAMPLE_FILES
from streamavatar_cli.puppet.metrics import (
    latent_hold,
    latent_motion_kept,
    score_video,
    settled_listen,
    whole_latent_frames,
)
from streamavatar_cli.puppet.validate import validate


@pytest.mark.parametrize("size", [(128, 128), (256, 256)])
def test_estimators_recover_ground_truth(size):
    v = validate([0, 3, 4, 6], seconds=6.0, size=size)
    assert v.mouth_r2 >= 0.9, v
    assert v.head_r2 >= 0.9, v
    assert v.hands_r2 >= 0.9, v


@pytest.fixture(scope="module")
def gt_clip():
    return sample_clip(4, seconds=10.0, size=(128, 128), espeak=False)


def test_ground_truth_clip_is_lip_synced_and_quiet_while_listening(gt_clip):
    c = gt_clip
    s = score_video(c.frames, c.agent, c.user, c.mask, c.reference)
    assert s["lip_sync"] >= 0.8, s
    assert s["mouth_listen"] < 0.05 < 0.3 < s["mouth_talk"], s
    assert s["listen_head_motion"] > 0.5 and s["talk_hand_motion"] > 10, s
    assert s["identity_drift_end"] < 0.2 and s["identity_drift"]["10s"] < 0.2, s


def test_a_repeated_still_has_no_lip_sync_and_no_motion(gt_clip):
    c = gt_clip
    still = np.repeat(c.reference[None], len(c.frames), axis=0)
    s = score_video(still, c.agent, c.user, c.mask, c.reference)
    assert abs(s["lip_sync"]) < 0.05 and s["listen_head_motion"] < 1e-6, s
    assert s["appearance_mean"] == 0.0


def test_a_lost_hand_reads_as_resting_not_as_noise(gt_clip):
    """A render that has blurred the hands into the shirt keeps a few stray, roughly
    hand-coloured pixels; their centroid jumps across the box (the estimate without the
    resting-hand prior). The prior reads that as no hand motion, while the moving hands of the
    ground truth still read as motion."""
    from streamavatar_cli.puppet.metrics import _check, _hand_centroids, _hand_colour, hand_offsets

    c = gt_clip
    rng = np.random.default_rng(0)
    lost = c.frames.copy()
    lower = lost[:, 97:]  # the hands' boxes (canvas y >= 194 at 128 px)
    lower[:] = np.median(c.reference[110:, 56:72].reshape(-1, 3), axis=0)  # the shirt
    lay = _check(lost, c.reference)
    stray = np.clip(_hand_colour(c.reference, lay) + [20, -20, 20], 0, 255)
    for f in lower:  # a stray pixel per frame, somewhere in the lower band
        f[rng.integers(0, f.shape[0]), rng.integers(0, f.shape[1])] = stray
    colour = _hand_colour(c.reference, lay)
    unregularised = _hand_centroids(lost, colour, lay)[0]
    assert unregularised.var(0).sum() > 100.0  # what the prior is for
    assert hand_offsets(lost, c.reference).var(0).sum() < 5.0
    assert hand_offsets(c.frames, c.reference).var(0).sum() > 50.0


def test_a_different_identity_is_far_in_appearance(gt_clip):
    c = gt_clip
    other = sample_clip(5, seconds=1.0, size=(128, 128), espeak=False)
    s = score_video(other.frames, other.agent, other.user, other.mask, c.reference)
    assert s["appearance_mean"] > 0.3, s


def test_puppet_sample_score_and_render_accepts_the_mask(tmp_path):
    out = tmp_path / "clip"
    runner = CliRunner()
    # --no-espeak: the same conversation with or without espeak-ng installed (seed 5 talks
    # for 36 of its 75 frames; seed 4 talks only when espeak-ng speaks its first turn)
    args = ["puppet", "sample", "--seed", "5", "-o", str(out), "--seconds", "3", "--size", "64x64",
            "--no-espeak"]  # fmt: skip
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert all((out / name).stat().st_size > 0 for name in SAMPLE_FILES)
    state = json.loads((out / "state.json").read_text())
    mask = load_mask_file(out / "mask.json", 75)
    assert state["n_frames"] == 75 and mask.sum() > 0
    args = ["puppet", "score", str(out / "clip.mp4"), "--audio", str(out / "agent.wav"),
            "--user-audio", str(out / "user.wav"), "--mask", str(out / "mask.json"),
            "--reference", str(out / "reference.png"), "--json"]  # fmt: skip
    scored = runner.invoke(cli.app, args)
    assert scored.exit_code == 0, scored.output
    scores = json.loads(scored.stdout)
    assert scores["n_frames"] == 75 and scores["mouth_listen"] < 0.1
    proc = subprocess.run(
        [sys.executable, "-m", "streamavatar_cli", "render", "-i", str(out / "reference.png"),
         "-a", str(out / "agent.wav"), "-u", str(out / "user.wav"), "--mask", str(out / "mask.json"),
         "-o", str(tmp_path / "r.mp4"), "--model", "random-tiny", "--resolution", "64x64",
         "--steps", "1", "--no-rapr", "--quiet"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_listening_motion_skips_the_half_second_after_talk():
    mask = np.array([0, 0, 1, 1] + [0] * 15 + [1])
    expected = np.zeros(20, bool)
    expected[[0, 1, 16, 17, 18]] = True
    assert np.array_equal(settled_listen(mask), expected)


def test_the_ground_truth_listens_to_the_user_and_its_talk_only_does_not():
    """The truth's "talk-only" row of the model card: the same puppet and talk, no user speech."""
    from streamavatar_cli.puppet.evaluate import puppet_case, score_truth, score_truth_talk_only

    case = puppet_case(100_000, seconds=20.0, size=(128, 128), espeak=False)
    heard, deaf = score_truth(case), score_truth_talk_only(case)
    assert heard["lip_sync"] == pytest.approx(deaf["lip_sync"], abs=0.02)
    assert heard["listen_head_motion"] > 5 * deaf["listen_head_motion"]
    assert heard["listen_motion"] > 2 * deaf["listen_motion"]


@pytest.mark.parametrize("n_frames, whole", [(1, 1), (4, 1), (5, 5), (8, 5), (9, 9), (203, 201)])
def test_whole_latent_frames_is_the_longest_1_plus_4k_prefix(n_frames, whole):
    assert whole_latent_frames(n_frames) == whole


def test_latent_hold_keeps_frame_zero_and_each_latents_mean():
    x = np.array([9.0, 1, 2, 3, 6, 0, 0, 4, 4, 7])  # 1 + 2 groups of 4; the tail is cut
    assert np.allclose(latent_hold(x), [9, 3, 3, 3, 3, 2, 2, 2, 2])


def test_latent_motion_kept_tells_a_mean_only_round_trip_from_a_faithful_one():
    """A round trip that keeps each latent's mean mouth but no motion inside it reads intra 0;
    one that keeps every frame reads 1 on both."""
    rng = np.random.default_rng(0)
    mouth = rng.random(1 + 4 * 30)
    mask = np.ones(len(mouth), bool)
    mean_only = latent_motion_kept(mouth, latent_hold(mouth), mask)
    assert mean_only["mouth_group_corr"] == pytest.approx(1.0)
    assert mean_only["mouth_intra_corr"] == 0.0
    exact = latent_motion_kept(mouth, mouth + 0.3, mask)
    assert exact["mouth_group_corr"] == pytest.approx(1.0)
    assert exact["mouth_intra_corr"] == pytest.approx(1.0)

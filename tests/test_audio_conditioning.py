"""Talk/listen conditioning (mask after extraction) and per-latent audio windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamavatar_cli.audio import (
    build_audio_conditioning,
    latent_windows,
    mix_tracks,
    num_latent_frames,
)
from streamavatar_cli.config import AudioWindow, DiTConfig


class RecordingExtractor:
    """Stand-in extractor: feature of frame j = mean of its samples, recording each input."""

    layers, dim = 2, 3

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def __call__(self, wave: np.ndarray) -> torch.Tensor:
        self.seen.append(wave)
        n = (len(wave) * 25 + 8000) // 16000
        padded = np.zeros(n * 640, dtype=np.float32)
        padded[: min(len(wave), n * 640)] = wave[: n * 640]
        per_frame = torch.from_numpy(padded.reshape(n, 640).mean(axis=1))
        return per_frame[:, None, None].expand(n, self.layers, self.dim).clone()


def waves() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    agent = rng.uniform(0.0, 0.5, 6400).astype(np.float32)  # 10 frames
    user = rng.uniform(-0.5, 0.0, 4480).astype(np.float32)  # 7 frames
    return agent, user


def test_mixed_features_are_masked_after_extraction():
    agent, user = waves()
    mask = np.array([1, 1, 0, 0, 1, 0, 1, 1, 0, 0], dtype=np.int8)
    extractor = RecordingExtractor()
    cond = build_audio_conditioning(extractor, mask, agent, user)
    assert len(extractor.seen) == 1  # one pass over the mix, not one per track
    np.testing.assert_array_equal(extractor.seen[0], mix_tracks(agent, user))
    feats = extractor(mix_tracks(agent, user))
    m = torch.from_numpy(mask.astype(np.float32))[:, None, None]
    torch.testing.assert_close(cond.talk, feats * m)
    torch.testing.assert_close(cond.listen, feats * (1 - m))
    assert cond.n_frames == 10 and cond.talk.shape == (10, 2, 3)


def test_separate_features_take_talk_from_agent_and_listen_from_user():
    agent, user = waves()
    mask = np.array([1, 0] * 5, dtype=np.int8)
    cond = build_audio_conditioning(RecordingExtractor(), mask, agent, user, features="separate")
    # agent samples are all positive, user samples all negative (zero after 7 frames)
    assert (cond.talk[mask == 1] > 0).all() and not cond.talk[mask == 0].any()
    assert (cond.listen[:7][mask[:7] == 0] < 0).all() and not cond.listen[mask == 1].any()
    assert not cond.listen[7:].any()


def test_conditioning_errors():
    agent, user = waves()
    with pytest.raises(ValueError, match="mask has 9 frames but the audio has 10"):
        build_audio_conditioning(RecordingExtractor(), np.ones(9), agent, user)
    with pytest.raises(ValueError, match="needs a user track"):
        build_audio_conditioning(RecordingExtractor(), np.ones(10), agent, features="separate")
    with pytest.raises(ValueError, match="allowed"):
        build_audio_conditioning(RecordingExtractor(), np.ones(10), agent, features="mix")


@pytest.mark.parametrize("n_frames, n_latent", [(0, 0), (1, 0), (2, 1), (5, 1), (6, 2),
                                                (188, 47), (189, 47), (190, 48)])  # fmt: skip
def test_latent_count_covers_all_video_frames(n_frames, n_latent):
    assert num_latent_frames(n_frames) == n_latent
    assert 1 + 4 * n_latent >= n_frames  # every frame is decoded (the last chunk is trimmed)


def test_latent_windows_follow_the_documented_indices():
    n_frames = 14
    feats = torch.arange(n_frames, dtype=torch.float32)[:, None, None].expand(n_frames, 2, 3)
    n_latent = num_latent_frames(n_frames)  # 4: latent 4 covers frames 13..16 (trimmed)
    windows = latent_windows(feats, n_latent)
    assert windows.shape == (4, 8, 2, 3)
    index = windows[:, :, 0, 0].long().tolist()
    assert index == [
        [0, 0, 1, 2, 3, 4, 5, 6],  # k = 1: frames 1..4, two before (-1, 0), two after (5, 6)
        [3, 4, 5, 6, 7, 8, 9, 10],  # k = 2: frames 5..8
        [7, 8, 9, 10, 11, 12, 13, 13],  # k = 3: frames 9..12, 14 clamps to 13
        [11, 12, 13, 13, 13, 13, 13, 13],  # k = 4: beyond the end repeats the last frame
    ]
    assert (windows[:, :, 1] == windows[:, :, 0]).all()


def test_a_window_with_more_memory_looks_further_back():
    feats = torch.arange(14, dtype=torch.float32)[:, None, None]
    windows = latent_windows(feats, 3, AudioWindow(12, lookahead=0))
    assert windows.shape == (3, 12, 1, 1)
    assert windows[:, :, 0, 0].long().tolist() == [
        [0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],  # k = 1: frames 1..4 and 8 before (-7 .. 0)
        [0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8],  # k = 2: frames 5..8, nothing after
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
    ]
    assert AudioWindow(12, lookahead=0).past == 8 and AudioWindow().past == 2


@pytest.mark.parametrize("size, lookahead", [(3, 0), (8, 5), (8, -1)])
def test_an_audio_window_must_hold_the_latents_frames(size, lookahead):
    with pytest.raises(ValueError, match="lookahead"):
        latent_windows(torch.zeros(5, 1, 1), 1, AudioWindow(size, lookahead))
    with pytest.raises(ValueError, match="lookahead"):
        DiTConfig(audio_window=size, audio_lookahead=lookahead).validate()


def test_a_config_without_a_lookahead_reads_as_the_centred_window():
    data = DiTConfig().to_dict()
    del data["audio_lookahead"]  # config.json files written before the field existed
    assert DiTConfig.from_dict(data).audio_frames == AudioWindow(8, 2)


def test_latent_windows_bad_arguments():
    with pytest.raises(ValueError, match="no audio frames"):
        latent_windows(torch.zeros(0, 1, 1), 1)
    assert latent_windows(torch.zeros(0, 1, 1), 0).shape == (0, 8, 1, 1)

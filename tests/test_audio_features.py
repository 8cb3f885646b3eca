"""Per-video-frame audio features: wav2vec2 (tiny random models) and log-mel."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining, Wav2Vec2Model

from streamavatar_cli import hub
from streamavatar_cli.audio import (
    MelFeatures,
    Wav2Vec2Features,
    load_audio,
    load_feature_extractor,
    load_wav2vec2_model,
    mix_tracks,
)
from streamavatar_cli.config import AUDIO_PRESETS, AudioConfig
from streamavatar_cli.errors import ModelError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HIDDEN = 32


def tiny_config(**overrides) -> Wav2Vec2Config:
    """wav2vec2-base's CNN geometry (stride 320, field 400) and GroupNorm, tiny widths."""
    kwargs = dict(
        hidden_size=HIDDEN, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        codevector_dim=16, proj_codevector_dim=16, num_codevectors_per_group=8,
    )  # fmt: skip
    kwargs.update(overrides)
    return Wav2Vec2Config(**kwargs)


@pytest.fixture(scope="module")
def mix() -> np.ndarray:
    return mix_tracks(load_audio(EXAMPLES / "agent.wav"), load_audio(EXAMPLES / "user.wav"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("w2v")
    Wav2Vec2Model(tiny_config()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def extractor(model_dir) -> Wav2Vec2Features:
    config = AudioConfig(extractor="wav2vec2", model=str(model_dir), layers=2, dim=HIDDEN)
    return load_feature_extractor(config)


@pytest.mark.parametrize("num_samples, n_frames", [(0, 0), (319, 0), (320, 1), (800, 1),
                                                   (16000, 25), (120000, 188)])  # fmt: skip
def test_every_extractor_gives_one_vector_per_video_frame(extractor, num_samples, n_frames):
    wave = np.random.default_rng(0).normal(0, 0.1, num_samples).astype(np.float32)
    for ex, layers, dim in ((extractor, 2, HIDDEN), (MelFeatures(16, 2), 2, 16)):
        feats = ex(wave)
        assert feats.dtype == torch.float32
        assert tuple(feats.shape) == (n_frames, layers, dim)
        assert torch.isfinite(feats).all()


def test_wav2vec2_layers_start_after_the_cnn_projection_at_frame_centres(extractor, mix):
    feats = extractor(mix)
    x = extractor._model_input(mix)
    with torch.no_grad():
        states = extractor.model(torch.from_numpy(x)[None], output_hidden_states=True).hidden_states
    ref = torch.stack(states[1:3], dim=2)[0]  # layers 1..2, not hidden_states[0]
    # video frame j centre (j + 0.5) / 25 s = sample 640 j + 320; encoder frame i centre
    # = sample 320 i + 200 -> i = 2 j + 0.375
    pos = np.clip(2 * np.arange(len(feats)) + 0.375, 0, len(ref) - 1)
    lo = np.floor(pos).astype(int)
    w = torch.from_numpy(pos - lo).float()[:, None, None]
    expected = ref[lo] * (1 - w) + ref[np.minimum(lo + 1, len(ref) - 1)] * w
    torch.testing.assert_close(feats, expected, atol=1e-5, rtol=1e-5)


def test_windowing_is_exact_for_a_model_with_finite_context(mix):
    # Zero attention output: the model sees only CNN (25 ms) + positional-conv (+-8 frames,
    # 0.16 s) context, less than the >= 0.24 s every kept frame has on both sides with a
    # 0.5 s overlap. Any difference is a stitching bug; measured max |diff| 2e-6 (float32
    # conv over different lengths), tolerance 1e-5.
    # The GroupNorm of base-size models still normalises over the whole input: this test
    # also checks the whole-utterance statistics that keep it window-independent.
    torch.manual_seed(1)
    model = Wav2Vec2Model(tiny_config()).eval()
    with torch.no_grad():
        for layer in model.encoder.layers:
            layer.attention.out_proj.weight.zero_()
            layer.attention.out_proj.bias.zero_()
    single = Wav2Vec2Features(model, 3)(mix)
    windowed = Wav2Vec2Features(model, 3, window_s=1.0, overlap_s=0.5)
    assert len(windowed._windows(375)) >= 10
    torch.testing.assert_close(windowed(mix), single, atol=1e-5, rtol=0)


def test_windowing_stays_close_with_full_attention(extractor, mix):
    # With attention, a window cannot see audio beyond its edges, so it is not exact.
    # Random weights attend almost uniformly over the whole input: the worst case. Measured
    # over 3 seeds and 7-12 windows: max |diff| 0.3-0.6 % of max |feature| (mean 0.1 %);
    # tolerance 2 %, while one frame of misalignment at a seam gives > 30 %.
    single = extractor(mix)
    windowed = Wav2Vec2Features(extractor.model, 2, window_s=2.0, overlap_s=1.0)(mix)
    assert (windowed - single).abs().max() < 0.02 * single.abs().max()


def test_pretraining_checkpoint_without_processor_loads(tmp_path, mix):
    # TencentGameMate/chinese-wav2vec2-base is a Wav2Vec2ForPreTraining checkpoint with no
    # preprocessor_config.json: only the encoder is used, normalisation is ours.
    torch.manual_seed(2)
    pretraining = Wav2Vec2ForPreTraining(tiny_config())
    pretraining.save_pretrained(tmp_path)
    assert not (tmp_path / "preprocessor_config.json").exists()
    model = load_wav2vec2_model(tmp_path)
    torch.testing.assert_close(
        model.encoder.layers[0].attention.q_proj.weight,
        pretraining.wav2vec2.encoder.layers[0].attention.q_proj.weight,
    )
    assert Wav2Vec2Features(model, 3)(mix).shape == (188, 3, HIDDEN)


def test_model_errors_name_the_path(tmp_path, model_dir):
    with pytest.raises(ModelError, match="does not exist"):
        load_wav2vec2_model(tmp_path / "nowhere")
    with pytest.raises(ModelError, match="no config.json"):
        load_wav2vec2_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "hubert"}))
    with pytest.raises(ModelError, match="not wav2vec2") as info:
        load_wav2vec2_model(tmp_path)
    assert str(tmp_path) in str(info.value)
    weightless = tmp_path / "weightless"
    weightless.mkdir()
    (weightless / "config.json").write_text((model_dir / "config.json").read_text())
    with pytest.raises(ModelError, match="cannot load wav2vec2 weights from .*weightless"):
        load_wav2vec2_model(weightless)


def test_missing_encoder_weights_are_an_error(tmp_path, model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    config["num_hidden_layers"] = 4  # the file only has 3 layers
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes((model_dir / "model.safetensors").read_bytes())
    with pytest.raises(ModelError, match="lacks .* weight"):
        load_wav2vec2_model(tmp_path)


def test_offline_hub_id_says_which_download_to_run(tmp_path, monkeypatch):
    # conftest sets HF_HUB_OFFLINE=1; assumes no copy in the test machine's HF cache
    monkeypatch.setattr(hub, "weights_dirs", lambda: [tmp_path])
    with pytest.raises(ModelError, match="streamavatar download wav2vec2-base-960h"):
        load_feature_extractor(AudioConfig())


def test_hub_id_is_found_where_streamavatar_download_puts_it(tmp_path, model_dir, monkeypatch):
    shutil.copytree(model_dir, tmp_path / "wav2vec2-base-960h")
    monkeypatch.setattr(hub, "weights_dirs", lambda: [tmp_path])
    extractor = load_feature_extractor(AudioConfig(layers=2, dim=HIDDEN))  # the default id
    assert (extractor.layers, extractor.dim) == (2, HIDDEN)


def test_config_width_must_match_the_model(model_dir):
    config = AudioConfig(extractor="wav2vec2", model=str(model_dir), layers=2, dim=768)
    with pytest.raises(ModelError, match="dim=768"):
        load_feature_extractor(config)
    config = AudioConfig(extractor="wav2vec2", model=str(model_dir), layers=5, dim=HIDDEN)
    with pytest.raises(ModelError, match="3 layers"):
        load_feature_extractor(config)


def test_mel_preset_and_layers():
    ex = load_feature_extractor(AUDIO_PRESETS["tiny-mel"])
    assert isinstance(ex, MelFeatures) and (ex.layers, ex.dim) == (2, 16)
    wave = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    feats = ex(wave)
    torch.testing.assert_close(feats[1:, 1], feats[1:, 0] - feats[:-1, 0])
    assert not feats[0, 1].any()
    torch.testing.assert_close(MelFeatures(16, 1)(wave)[:, 0], feats[:, 0])


def test_mel_silence_is_the_floor_and_a_tone_lands_in_its_band_and_frame():
    ex = MelFeatures(16, 1)
    assert (ex(np.zeros(3200, dtype=np.float32)) == -1.0).all()
    wave = np.zeros(16000, dtype=np.float32)
    t = np.arange(640) / 16000
    wave[640 * 10 : 640 * 11] = 0.5 * np.sin(2 * np.pi * 1000 * t)  # on screen in frame 10
    feats = ex(wave)[:, 0]
    assert int(feats.mean(dim=1).argmax()) == 10
    band = int(feats[10].argmax())
    bins = ex.bank[band].nonzero()
    assert int(bins.min()) <= 1000 * ex.N_FFT // 16000 <= int(bins.max())  # FFT bin of 1 kHz


def test_mel_blocks_equal_one_pass(mix):
    torch.testing.assert_close(
        MelFeatures(24, 2, block_frames=7)(mix), MelFeatures(24, 2)(mix), atol=1e-5, rtol=0
    )

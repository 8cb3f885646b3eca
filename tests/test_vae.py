"""Wan2.2 VAE: equality with diffusers' AutoencoderKLWan, streaming decode, key map, loading."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKLWan
from safetensors.torch import save_file

from streamavatar_cli.config import MODEL_PRESETS, VAEConfig
from streamavatar_cli.errors import ModelError
from streamavatar_cli.models import WanVAE, load_vae
from streamavatar_cli.models.vae_io import (
    diffusers_to_official_vae_keys,
    official_to_diffusers_vae_keys,
    vae_config_from_diffusers,
)

Z = 8


@pytest.fixture(scope="module")
def reference() -> AutoencoderKLWan:
    """The Wan2.2 residual layout at toy widths, random weights (gammas and biases too)."""
    torch.manual_seed(0)
    model = AutoencoderKLWan(
        base_dim=8,
        decoder_base_dim=12,
        z_dim=Z,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=2,
        temperal_downsample=[False, True, True],
        is_residual=True,
        patch_size=2,
        in_channels=12,
        out_channels=12,
        scale_factor_spatial=16,
        latents_mean=(0.2 * torch.randn(Z)).tolist(),
        latents_std=(0.5 + torch.rand(Z)).tolist(),
    ).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("gamma"):
                param.add_(0.2 * torch.randn_like(param))
            elif name.endswith("bias"):
                param.normal_(0.0, 0.05)
    return model


@pytest.fixture(scope="module")
def config(reference) -> VAEConfig:
    return vae_config_from_diffusers(dict(reference.config))


@pytest.fixture(scope="module")
def official_state(reference, config) -> dict[str, torch.Tensor]:
    state = reference.state_dict()
    names = diffusers_to_official_vae_keys(state, config.num_res_blocks)
    return {names[k]: v.contiguous() for k, v in state.items()}


@pytest.fixture(scope="module")
def expected(reference, config):
    """Video, diffusers' normalised mu, and diffusers' decode of those latents."""
    torch.manual_seed(1)
    video = torch.rand(1, 3, 9, 64, 64) * 2 - 1
    mean = torch.tensor(config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(config.latents_std).view(1, -1, 1, 1, 1)
    with torch.no_grad():
        latents = (reference.encode(video).latent_dist.mean - mean) / std
        decoded = reference.decode(latents * std + mean).sample
    return video, latents, decoded


def _write(layout: str, tmp_path, reference, official_state):
    if layout == "pth":
        torch.save(official_state, tmp_path / "Wan2.2_VAE.pth")
        return tmp_path / "Wan2.2_VAE.pth"
    if layout == "pth-nested":
        torch.save({"state_dict": official_state}, tmp_path / "vae.pt")
        return tmp_path / "vae.pt"
    if layout == "diffusers":
        reference.save_pretrained(tmp_path)
        return tmp_path
    if layout == "diffusers-sharded":
        reference.save_pretrained(tmp_path, max_shard_size="100KB")
        assert (tmp_path / "diffusion_pytorch_model.safetensors.index.json").is_file()
        return tmp_path
    reference.save_pretrained(tmp_path / "vae")  # a diffusers pipeline root
    return tmp_path


@pytest.mark.parametrize(
    "layout", ["pth", "pth-nested", "diffusers", "diffusers-sharded", "diffusers-root"]
)
def test_matches_diffusers(layout, tmp_path, reference, config, official_state, expected):
    path = _write(layout, tmp_path, reference, official_state)
    # The .pth files carry no config; the diffusers folders must supply theirs.
    vae = load_vae(path, config=config if layout.startswith("pth") else None)
    assert vae.config == config
    video, latents, decoded = expected
    ours = vae.encode(video)
    assert ours.shape == (1, Z, 3, 4, 4)
    assert (ours - latents).abs().max().item() <= 1e-4
    out = vae.decode(latents)
    assert out.shape == (1, 3, 9, 64, 64)
    assert (out - decoded).abs().max().item() <= 1e-4
    # The reference output is spread out and mostly unclamped, so the comparison means something.
    assert decoded.std().item() > 0.1 and decoded.abs().lt(1.0).float().mean() > 0.9


def test_streaming_decode_equals_one_shot(config, official_state):
    vae = WanVAE(config)
    vae.load_state_dict(official_state)
    torch.manual_seed(2)
    latents = torch.randn(1, Z, 7, 4, 4)
    full = vae.decode(latents)
    assert full.shape == (1, 3, 25, 64, 64)

    stream = vae.stream_decoder()
    pieces = [stream.decode(latents[:, :, a:b]) for a, b in ((0, 1), (1, 4), (4, 7))]
    assert [p.shape[2] for p in pieces] == [1, 12, 12]
    assert (torch.cat(pieces, dim=2) - full).abs().max().item() <= 1e-5

    cache_bytes = stream.cache.nbytes
    stream.decode(latents[:, :, 4:7])  # the state must not grow with the stream
    assert stream.cache.nbytes == cache_bytes

    stream.reset()
    again = [stream.decode(latents[:, :, a:b]) for a, b in ((0, 1), (1, 7))]
    assert (torch.cat(again, dim=2) - full).abs().max().item() <= 1e-5


def test_key_map_round_trip_covers_every_key():
    """On the real Wan2.2 layout (196 tensors), built on meta: no memory, no weights."""
    real = VAEConfig.preset("wan2.2")
    with torch.device("meta"):
        diffusers = AutoencoderKLWan(
            base_dim=real.base_dim,
            decoder_base_dim=real.decoder_base_dim,
            z_dim=real.z_dim,
            is_residual=True,
            patch_size=2,
            in_channels=12,
            out_channels=12,
        )
        ours = WanVAE(real)
    diffusers_keys = list(diffusers.state_dict())
    to_official = diffusers_to_official_vae_keys(diffusers_keys, real.num_res_blocks)
    back = official_to_diffusers_vae_keys(to_official.values(), real.num_res_blocks)
    assert len(diffusers_keys) == len(set(to_official.values())) == len(back) == 196
    assert set(to_official.values()) == set(ours.state_dict())
    assert all(back[to_official[k]] == k for k in diffusers_keys)
    assert to_official["decoder.up_blocks.0.upsampler.time_conv.weight"] == (
        "decoder.upsamples.0.upsamples.3.time_conv.weight"
    )
    assert to_official["encoder.down_blocks.1.resnets.0.conv_shortcut.bias"] == (
        "encoder.downsamples.1.downsamples.0.shortcut.bias"
    )


def _broken(kind: str, tmp_path, official_state):
    state = dict(official_state)
    if kind == "truncated-safetensors":
        save_file(state, tmp_path / "vae.safetensors")
        data = (tmp_path / "vae.safetensors").read_bytes()
        (tmp_path / "vae.safetensors").write_bytes(data[: len(data) // 2])
        return tmp_path / "vae.safetensors", "vae.safetensors"
    if kind == "truncated-pth":
        torch.save(state, tmp_path / "Wan2.2_VAE.pth")
        data = (tmp_path / "Wan2.2_VAE.pth").read_bytes()
        (tmp_path / "Wan2.2_VAE.pth").write_bytes(data[: len(data) // 2])
        return tmp_path / "Wan2.2_VAE.pth", "download it again"
    if kind == "missing-key":
        del state["decoder.head.2.bias"]
        key = "decoder.head.2.bias"
    else:
        state["encoder.middle.1.proj.weight"] = torch.zeros(3, 3, 1, 1)
        key = "encoder.middle.1.proj.weight"
    save_file(state, tmp_path / "vae.safetensors")
    return tmp_path, key


@pytest.mark.parametrize("kind", ["truncated-safetensors", "truncated-pth", "missing-key", "shape"])
def test_load_errors_name_the_problem(kind, tmp_path, config, official_state):
    path, needle = _broken(kind, tmp_path, official_state)
    with pytest.raises(ModelError, match=needle.replace(".", r"\.")):
        load_vae(path, config=config)


def test_wan22_preset_on_meta():
    """Parameter count, shapes and decoder-cache size of the real VAE, without memory."""
    with torch.device("meta"):
        vae = WanVAE(VAEConfig.preset("wan2.2"))
    assert sum(p.numel() for p in vae.parameters()) == 704_688_668
    assert not list(vae.buffers())
    video = torch.empty(1, 3, 5, 64, 96, device="meta")
    assert vae.encode(video).shape == (1, 48, 2, 4, 6)
    stream = vae.stream_decoder()
    assert stream.decode(torch.empty(1, 48, 1, 44, 80, device="meta")).shape[2] == 1
    assert stream.decode(torch.empty(1, 48, 1, 44, 80, device="meta")).shape == (1, 3, 4, 704, 1280)
    # wan22-backbone.md 3.3: the decoder cache at 704x1280 holds about 1.61 G elements.
    assert 1.59e9 < stream.cache.nbytes / 4 < 1.62e9


def test_tiny_preset_shapes_and_causality(tmp_path):
    torch.manual_seed(3)
    vae = WanVAE(VAEConfig.preset("tiny"))
    video = torch.rand(1, 3, 5, 64, 48) * 2 - 1
    latents = vae.encode(video)
    assert latents.shape == (1, 16, 2, 8, 6)
    # Causal: the first frame alone encodes to the first latent of the whole clip.
    assert (vae.encode(video[:, :, :1]) - latents[:, :, :1]).abs().max().item() <= 1e-5
    out = vae.decode(latents)
    assert out.shape == (1, 3, 5, 64, 48) and out.abs().max() <= 1.0
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        vae.encode(video[:, :, :4])

    # A StreamAvatar model folder: the config.json's vae section picks the tiny layout.
    save_file(vae.state_dict(), tmp_path / "vae.safetensors")
    MODEL_PRESETS["tiny"].save(tmp_path / "config.json")
    loaded = load_vae(tmp_path)
    assert (loaded.decode(latents) - out).abs().max().item() <= 1e-6


def test_bf16_runs_close_to_fp32():
    torch.manual_seed(4)
    vae = WanVAE(VAEConfig.preset("tiny"))
    video = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    latents = torch.randn(1, 16, 2, 4, 4)
    encoded, decoded = vae.encode(video), vae.decode(latents)
    vae.to(torch.bfloat16)
    encoded16, decoded16 = vae.encode(video), vae.decode(latents)
    assert encoded16.dtype == decoded16.dtype == torch.bfloat16
    assert (encoded16.float() - encoded).abs().max().item() < 0.02
    assert (decoded16.float() - decoded).abs().max().item() < 0.05

"""The DiT against diffusers' WanTransformer3DModel, checkpoint layouts, and the 5B key set."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
import torch
from safetensors.torch import save_file

from streamavatar_cli.config import MODEL_PRESETS, DiTConfig
from streamavatar_cli.errors import ModelError
from streamavatar_cli.models import WanDiT, load_dit, save_dit
from streamavatar_cli.models.dit import count_parameters, is_audio_param
from streamavatar_cli.models.dit_io import diffusers_to_official_key, official_to_diffusers_key

diffusers = pytest.importorskip("diffusers")

HEADS, HEAD_DIM, IN_CH, TEXT_DIM, TEXT_LEN = 2, 24, 8, 32, 16

# Our config for the same small model; small audio fields so the audio modules stay tiny.
SMALL = DiTConfig(
    dim=HEADS * HEAD_DIM, ffn_dim=96, num_heads=HEADS, num_layers=2, in_dim=IN_CH, out_dim=IN_CH,
    freq_dim=32, text_dim=TEXT_DIM, text_len=TEXT_LEN, audio_feature_dim=6,
    audio_feature_layers=2, audio_window=8, audio_tokens=4, audio_hidden_dim=16,
    audio_context_dim=16,
)  # fmt: skip


def randomize_(module: torch.nn.Module, seed: int) -> None:
    """Random values everywhere (norm weights too), so a swapped or skipped tensor shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


@pytest.fixture(scope="module")
def reference():
    model = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=HEADS, attention_head_dim=HEAD_DIM,
        in_channels=IN_CH, out_channels=IN_CH, text_dim=TEXT_DIM, freq_dim=32, ffn_dim=96,
        num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
    )  # fmt: skip
    randomize_(model, seed=0)
    return model.eval()


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, IN_CH, 4, 6, 8, generator=g)  # 4 latent frames, 3x4 patch grid
    t = torch.tensor([[0.0, 700.0, 700.0, 700.0]])  # TI2V: the reference frame is clean
    context = torch.randn(1, 7, TEXT_DIM, generator=g)  # shorter than text_len: zero-padded
    return x, t, context


def diffusers_forward(model, x, t, context):
    tokens_per_frame = (x.shape[3] // 2) * (x.shape[4] // 2)
    per_token_t = t.repeat_interleave(tokens_per_frame, dim=1)  # [B, L]
    padded = torch.nn.functional.pad(context, (0, 0, 0, TEXT_LEN - context.shape[1]))
    with torch.no_grad():
        return model(x, per_token_t, padded, return_dict=False)[0]


def write_official_folder(state: dict, folder, config: dict, n_shards: int = 2):
    """The official layout: config.json + sharded safetensors + index json."""
    folder.mkdir(parents=True)
    keys = sorted(state)
    weight_map = {}
    for i in range(n_shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        shard = {k: state[k].contiguous() for k in keys[i::n_shards]}
        save_file(shard, str(folder / name))
        weight_map.update(dict.fromkeys(shard, name))
    index = {"metadata": {}, "weight_map": weight_map}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text(json.dumps(config))


def official_config(cfg: DiTConfig) -> dict:
    return {
        "_class_name": "WanModel", "model_type": "ti2v", "dim": cfg.dim, "ffn_dim": cfg.ffn_dim,
        "freq_dim": cfg.freq_dim, "in_dim": cfg.in_dim, "out_dim": cfg.out_dim,
        "num_heads": cfg.num_heads, "num_layers": cfg.num_layers, "text_len": cfg.text_len,
        "eps": cfg.eps, "text_dim": cfg.text_dim,
    }  # fmt: skip


@pytest.fixture(scope="module")
def official_state(reference):
    return {diffusers_to_official_key(k): v for k, v in reference.state_dict().items()}


def test_diffusers_folder_matches_diffusers_forward(reference, inputs, tmp_path):
    reference.save_pretrained(tmp_path / "pipe" / "transformer")
    ours = load_dit(tmp_path / "pipe", config=SMALL)
    x, t, context = inputs
    expected = diffusers_forward(reference, x, t, context)
    got = ours(x, t, context)
    assert got.shape == x.shape
    assert (got - expected).abs().max().item() <= 1e-4
    assert ours.load_report.layout == "diffusers"
    assert not ours.load_report.audio_weights


def test_official_sharded_folder_matches_diffusers_forward(
    reference, inputs, official_state, tmp_path
):
    write_official_folder(official_state, tmp_path / "wan", official_config(SMALL))
    ours = load_dit(tmp_path / "wan", config=SMALL)
    x, t, context = inputs
    err = (ours(x, t, context) - diffusers_forward(reference, x, t, context)).abs().max().item()
    assert err <= 1e-4
    assert ours.load_report.layout == "official"


def test_official_config_json_is_read_without_override(official_state, tmp_path):
    write_official_folder(official_state, tmp_path / "wan", official_config(SMALL))
    # Without `config`, the folder's config.json gives the backbone and the 5B audio defaults.
    with pytest.raises(ModelError):  # sanity: a wrong override is caught by shape checks
        load_dit(tmp_path / "wan", config=dataclasses.replace(SMALL, ffn_dim=64))
    model = load_dit(tmp_path / "wan")
    assert (model.config.dim, model.config.num_layers, model.config.ffn_dim) == (48, 2, 96)


def test_key_mapping_round_trips_every_key(reference):
    keys = list(reference.state_dict())
    official = [diffusers_to_official_key(k) for k in keys]
    assert len(set(official)) == len(keys)
    assert [official_to_diffusers_key(k) for k in official] == keys
    assert "blocks.0.norm3.weight" in official  # diffusers norm2 is the official norm3
    ours = {k for k in WanDiT(SMALL).state_dict() if not is_audio_param(k)} - {"prompt_context"}
    assert set(official) == ours


def test_streamavatar_checkpoint_round_trip(inputs, tmp_path):
    torch.manual_seed(0)
    model = WanDiT(SMALL)
    randomize_(model, seed=3)  # audio modules non-zero too: they must survive the round trip
    model.prompt_context.normal_()
    base = MODEL_PRESETS["tiny"]
    vae = dataclasses.replace(
        base.vae, z_dim=IN_CH, latents_mean=(0.0,) * IN_CH, latents_std=(1.0,) * IN_CH
    )
    audio = dataclasses.replace(base.audio, layers=2, dim=6)
    cfg = dataclasses.replace(base, dit=SMALL, vae=vae, audio=audio).validate()
    cfg.save(tmp_path / "config.json")
    save_dit(model, tmp_path)
    loaded = load_dit(tmp_path)
    x, t, _ = inputs
    audio = torch.randn(1, 3, 8, 2, 6)
    assert torch.equal(loaded(x, t, talk_audio=audio), model(x, t, talk_audio=audio))
    assert loaded.load_report.audio_weights and loaded.load_report.prompt_context


def test_zero_initialised_audio_modules_leave_output_bit_identical(inputs):
    torch.manual_seed(0)
    model = WanDiT(SMALL).eval()
    x, t, context = inputs
    talk = torch.randn(1, 3, 8, 2, 6)
    listen = torch.randn(1, 3, 8, 2, 6)
    with torch.no_grad():
        base = model(x, t, context)
        extended = model(x, t, context, talk_audio=talk, listen_audio=listen)
    assert torch.equal(base, extended)
    # ...and a trained (non-zero) audio module does change the output.
    with torch.no_grad():
        model.blocks[0].audio_attn.o.weight.normal_()
        assert not torch.equal(base, model(x, t, context, talk_audio=talk, listen_audio=listen))


def test_audio_is_frame_local(inputs):
    """Changing the audio of latent frame 3 changes only frame 3's output (one layer: no mixing)."""
    torch.manual_seed(0)
    model = WanDiT(dataclasses.replace(SMALL, num_layers=1)).eval()
    randomize_(model, seed=5)
    x, t, context = inputs
    talk = torch.randn(1, 3, 8, 2, 6)
    changed = talk.clone()
    changed[:, 2] += 1.0  # audio of the last latent frame
    with torch.no_grad():
        a = model(x, t, context, talk_audio=talk)
        b = model(x, t, context, talk_audio=changed)
    diff = (a - b).abs().amax(dim=(0, 1, 3, 4))
    assert diff[3] > 1e-3
    # Self-attention runs before the audio module in the only block: frames 0-2 are untouched.
    assert torch.equal(a[:, :, :3], b[:, :, :3])


def test_5b_preset_on_meta_has_the_official_parameters_and_keys():
    with torch.device("meta"):
        model = WanDiT(DiTConfig.preset("wan2.2-ti2v-5b"))
    backbone, audio = count_parameters(model)
    assert backbone == 4_999_787_712
    assert audio > 0
    backbone_keys = {k for k in model.state_dict() if not is_audio_param(k)} - {"prompt_context"}
    assert len(backbone_keys) == 825
    assert backbone_keys == official_5b_key_set()


def official_5b_key_set() -> set[str]:
    """The official state_dict key set, written out from wan22-backbone.md section 2.1."""
    keys = {"patch_embedding.weight", "patch_embedding.bias", "head.modulation"}
    for name in ("text_embedding.0", "text_embedding.2", "time_embedding.0", "time_embedding.2",
                 "time_projection.1", "head.head"):  # fmt: skip
        keys |= {f"{name}.weight", f"{name}.bias"}
    for i in range(30):
        b = f"blocks.{i}."
        keys |= {b + "modulation", b + "norm3.weight", b + "norm3.bias"}
        for attn in ("self_attn", "cross_attn"):
            for proj in "qkvo":
                keys |= {f"{b}{attn}.{proj}.weight", f"{b}{attn}.{proj}.bias"}
            keys |= {f"{b}{attn}.norm_q.weight", f"{b}{attn}.norm_k.weight"}
        keys |= {b + "ffn.0.weight", b + "ffn.0.bias", b + "ffn.2.weight", b + "ffn.2.bias"}
    return keys


def test_base_checkpoint_without_audio_says_so_once(official_state, tmp_path, caplog):
    write_official_folder(official_state, tmp_path / "wan", official_config(SMALL))
    with caplog.at_level(logging.WARNING):
        model = load_dit(tmp_path / "wan", config=SMALL)
    assert sum("no audio-module weights" in r.message for r in caplog.records) == 1
    assert torch.count_nonzero(model.blocks[1].listen_attn.o.weight) == 0


def test_bf16_loading_keeps_time_and_modulation_in_fp32(official_state, tmp_path):
    write_official_folder(official_state, tmp_path / "wan", official_config(SMALL))
    model = load_dit(tmp_path / "wan", config=SMALL, dtype=torch.bfloat16)
    assert model.blocks[0].self_attn.q.weight.dtype == torch.bfloat16
    assert model.blocks[0].modulation.dtype == torch.float32
    assert model.time_embedding[0].weight.dtype == torch.float32
    x = torch.randn(1, IN_CH, 2, 4, 4)
    assert model(x, torch.tensor([[0.0, 500.0]])).isfinite().all()


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda s: s.pop("blocks.1.ffn.2.bias"), "blocks.1.ffn.2.bias"),
        (lambda s: s.__setitem__("blocks.0.extra.weight", torch.zeros(1)), "blocks.0.extra.weight"),
        (lambda s: s.__setitem__("head.head.bias", torch.zeros(5)), "head.head.bias"),
    ],
    ids=["missing", "unexpected", "shape"],
)
def test_bad_checkpoints_name_the_key(official_state, tmp_path, corrupt, message):
    state = dict(official_state)
    corrupt(state)
    write_official_folder(state, tmp_path / "wan", official_config(SMALL), n_shards=1)
    with pytest.raises(ModelError, match=message.replace(".", r"\.")):
        load_dit(tmp_path / "wan", config=SMALL)


def test_truncated_shard_is_a_clear_error(official_state, tmp_path):
    write_official_folder(official_state, tmp_path / "wan", official_config(SMALL))
    shard = sorted((tmp_path / "wan").glob("*-00002-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:200])
    with pytest.raises(ModelError, match="truncated|cannot read"):
        load_dit(tmp_path / "wan", config=SMALL)


def test_missing_folder_and_non_model_folder(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_dit(tmp_path / "nope")
    with pytest.raises(ModelError, match="config.json"):
        load_dit(tmp_path)

"""The fixed prompt's umT5 embedding (5B teacher path) on a tiny random UMT5 written here in both
layouts `download --with-text-encoder` produces, and the motion-weighted losses."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from streamavatar_cli.models import WanDiT
from streamavatar_cli.train import TrainConfig
from streamavatar_cli.train.loop import World, lr_factor
from streamavatar_cli.train.losses import (
    box_frame_weights,
    flow_matching_loss,
    latent_loss_weights,
    listen_frame_weights,
    listen_region_weights,
    motion_weights,
    region_weights,
    temporal_change_l1,
    weighted_mean,
)
from streamavatar_cli.train.prompt import (
    FIXED_PROMPT,
    OFFICIAL_TOKENIZER,
    OFFICIAL_WEIGHTS,
    prompt_context,
)

WORDS = FIXED_PROMPT.split() + ["hello", "world"]
TEXT_DIM, TEXT_LEN = 32, 16
# transformers' UMT5 names -> Wan's t5.py names: the fixture writes the official layout with it.
HF_TO_WAN = {
    "layer.0.layer_norm": "norm1", "layer.0.SelfAttention.q": "attn.q",
    "layer.0.SelfAttention.k": "attn.k", "layer.0.SelfAttention.v": "attn.v",
    "layer.0.SelfAttention.o": "attn.o",
    "layer.0.SelfAttention.relative_attention_bias": "pos_embedding.embedding",
    "layer.1.layer_norm": "norm2", "layer.1.DenseReluDense.wi_0": "ffn.gate.0",
    "layer.1.DenseReluDense.wi_1": "ffn.fc1", "layer.1.DenseReluDense.wo": "ffn.fc2",
}  # fmt: skip


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def tiny_umt5():
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(3)
    config = UMT5Config(
        vocab_size=len(WORDS) + 3, d_model=TEXT_DIM, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", dropout_rate=0.0,
    )  # fmt: skip
    return UMT5EncoderModel(config).eval()


def write_diffusers_layout(folder: Path, encoder, tokenizer) -> None:
    encoder.save_pretrained(folder / "text_encoder")
    tokenizer.save_pretrained(folder / "tokenizer")


def write_official_layout(folder: Path, encoder, tokenizer) -> None:
    state = {}
    for name, tensor in encoder.state_dict().items():
        if name == "shared.weight":
            state["token_embedding.weight"] = tensor
        elif name == "encoder.final_layer_norm.weight":
            state["norm.weight"] = tensor
        elif name.startswith("encoder.block."):
            _, _, i, rest = name.split(".", 3)
            module = rest.rsplit(".", 1)[0]
            state[f"blocks.{i}.{HF_TO_WAN[module]}.weight"] = tensor
    torch.save({k: v.to(torch.bfloat16) for k, v in state.items()}, folder / OFFICIAL_WEIGHTS)
    tokenizer.save_pretrained(folder / OFFICIAL_TOKENIZER)


@pytest.fixture(scope="module")
def encoder_and_tokenizer():
    return tiny_umt5(), tiny_tokenizer()


def expected_context(encoder, tokenizer, dtype=torch.float32) -> torch.Tensor:
    ids = tokenizer(FIXED_PROMPT, return_tensors="pt").input_ids
    assert ids[0, -1] == 1 and ids.shape[1] == len(FIXED_PROMPT.split()) + 1  # words + EOS
    with torch.no_grad():
        hidden = encoder.to(dtype)(input_ids=ids).last_hidden_state[0].float()
    encoder.float()
    return torch.cat([hidden, torch.zeros(TEXT_LEN - len(hidden), TEXT_DIM)])


def test_diffusers_layout_prompt_is_the_encoder_output_then_zero_rows(
    tmp_path, encoder_and_tokenizer
):
    encoder, tokenizer = encoder_and_tokenizer
    write_diffusers_layout(tmp_path, encoder, tokenizer)
    got = prompt_context(tmp_path, TEXT_LEN, TEXT_DIM)
    n = len(FIXED_PROMPT.split()) + 1
    assert got.shape == (TEXT_LEN, TEXT_DIM)
    assert torch.allclose(got, expected_context(encoder, tokenizer), atol=1e-6)
    assert got[:n].abs().min(dim=1).values.gt(0).all() and got[n:].eq(0).all()


def test_official_layout_maps_wan_names_to_the_same_encoder(tmp_path, encoder_and_tokenizer):
    """Wan's own module names (bf16 .pth, tokenizer in google/umt5-xxl/) give the encoder the
    diffusers layout gives: the same network, run in bf16 like Wan runs it."""
    encoder, tokenizer = encoder_and_tokenizer
    write_official_layout(tmp_path, encoder, tokenizer)
    got = prompt_context(tmp_path, TEXT_LEN, TEXT_DIM)
    rounded = tiny_umt5()
    rounded.load_state_dict({k: v.bfloat16().float() for k, v in encoder.state_dict().items()})
    assert torch.allclose(got, expected_context(rounded, tokenizer, torch.bfloat16), atol=1e-6)
    fp32 = expected_context(encoder, tokenizer)
    assert 0 < (got - fp32).abs().max() < 0.05  # bf16, not a different network


BASE_DIT = {"dim": 32, "num_heads": 2, "ffn_dim": 64, "num_layers": 2}


def base_wan_folder(folder: Path) -> Path:
    """An official-layout Wan DiT at toy size (no audio modules, no prompt)."""
    from streamavatar_cli.config import DiTConfig

    cfg = DiTConfig.from_dict({**DiTConfig.preset("tiny").to_dict(), **BASE_DIT})
    torch.manual_seed(0)
    dit = WanDiT(cfg)
    state = {k: v.contiguous() for k, v in dit.state_dict().items()
             if not (k.startswith(("audio_proj.", "listen_proj.", "prompt_context"))
                     or ".audio_attn." in k or ".listen_attn." in k)}  # fmt: skip
    folder.mkdir(parents=True)
    save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "_class_name": "WanModel", "dim": cfg.dim, "ffn_dim": cfg.ffn_dim, "num_heads": cfg.num_heads,
        "num_layers": cfg.num_layers, "in_dim": cfg.in_dim, "out_dim": cfg.out_dim,
        "freq_dim": cfg.freq_dim, "text_dim": cfg.text_dim, "text_len": cfg.text_len,
    }))  # fmt: skip
    return folder


def teacher_config(init: Path, **teacher) -> TrainConfig:
    return TrainConfig.from_dict(
        {
            "data": {"size": [64, 64]},
            "model": {"init": str(init), "dit": BASE_DIT},
            "teacher": teacher,
        },
        "teacher",
    )


def test_teacher_from_a_base_checkpoint_stores_the_embedded_prompt(tmp_path, encoder_and_tokenizer):
    from streamavatar_cli.models.dit_io import save_dit
    from streamavatar_cli.train.teacher import init_teacher

    encoder, tokenizer = encoder_and_tokenizer
    base = base_wan_folder(tmp_path / "wan")
    write_diffusers_layout(base, encoder, tokenizer)
    teacher = init_teacher(teacher_config(base))
    expected = expected_context(encoder, tokenizer)
    assert torch.allclose(teacher.prompt_context, expected, atol=1e-6)
    # ... and it travels with the weights: a teacher folder needs no text encoder at render
    save_dit(teacher, tmp_path / "teacher")
    from safetensors.torch import load_file

    stored = load_file(str(tmp_path / "teacher" / "dit.safetensors"))["prompt_context"]
    assert torch.allclose(stored.float(), expected, atol=1e-6)


def test_base_checkpoint_without_text_encoder_is_a_clear_error(tmp_path):
    from streamavatar_cli.train.teacher import init_teacher

    base = base_wan_folder(tmp_path / "wan")
    with pytest.raises(ValueError, match="--with-text-encoder"):
        init_teacher(teacher_config(base))
    assert init_teacher(teacher_config(base, text_encoder="none")).prompt_context.eq(0).all()


def test_motion_weights_favour_what_moves_and_keep_the_loss_scale():
    ref = torch.zeros(1, 4, 1, 8, 8)
    x = torch.zeros(1, 4, 3, 8, 8)
    x[:, :, :, 2:4, 2:4] = 1.0  # a "mouth" that opened
    w = motion_weights(x, gain=4.0, tau=0.5, anchor=ref)
    assert w.shape == (1, 1, 3, 8, 8)
    assert motion_weights(x, gain=0.0, tau=0.5) is None  # off: the plain mean
    assert w[0, 0, :, 2, 2].eq(5.0).all() and w[0, 0, :, 6, 6].eq(1.0).all()
    err = torch.rand(1, 4, 3, 8, 8)
    assert torch.isclose(weighted_mean(err, None), err.mean())
    assert torch.isclose(weighted_mean(err, torch.full_like(w, 3.0)), err.mean())
    # an error on the moving pixels costs more under the weights than under the plain mean
    only_mouth = torch.zeros_like(err)
    only_mouth[:, :, :, 2:4, 2:4] = 1.0
    assert weighted_mean(only_mouth, w) > 3 * only_mouth.mean()
    noise, x0 = torch.randn_like(err), torch.randn_like(err)
    v = torch.randn_like(err)
    assert torch.isclose(flow_matching_loss(v, noise, x0), ((v - (noise - x0)) ** 2).mean())


def test_region_weights_cover_the_box_and_combine_with_motion():
    # a 16 x 16 latent grid, box over columns 4..8 and rows 6..8 (row 8 half covered)
    w = region_weights(16, 16, (0.25, 0.375, 0.5, 0.53125), gain=10.0)
    assert w.shape == (1, 1, 1, 16, 16)
    assert w[0, 0, 0, 6, 4] == 11.0 and w[0, 0, 0, 7, 7] == 11.0
    assert w[0, 0, 0, 8, 5] == 6.0  # half the cell inside: half the gain
    assert w[0, 0, 0, 5, 5] == 1.0 and w[0, 0, 0, 6, 8] == 1.0 and w[0, 0, 0, 6, 3] == 1.0
    assert region_weights(16, 16, (0.25, 0.375, 0.5, 0.53125), gain=0.0) is None
    with pytest.raises(ValueError, match="region_box"):
        region_weights(16, 16, (0.5, 0.1, 0.2, 0.3), gain=1.0)
    x = torch.zeros(2, 4, 3, 16, 16)
    x[:, :, 1, 0, 0] = 1.0  # something moved outside the box
    both = latent_loss_weights(x, 4.0, 0.5, (0.25, 0.375, 0.5, 0.53125), 10.0)
    motion = motion_weights(x, 4.0, 0.5)
    assert torch.equal(both, motion * w)
    assert latent_loss_weights(x, 0.0, 0.5, (), 0.0) is None
    assert torch.equal(latent_loss_weights(x, 0.0, 0.5, (0.25, 0.375, 0.5, 0.53125), 10.0), w)


def test_box_frame_weights_read_the_box_on_the_weighted_frames():
    box = (0.25, 0.375, 0.5, 0.53125)  # columns 4..8, rows 6..8 of 16 (row 8 half covered)
    w = box_frame_weights((2, 4, 3, 16, 16), box)
    assert w.shape == (2, 1, 3, 16, 16)
    assert w[0, 0, 1, 6, 4] == 1.0 and w[1, 0, 2, 7, 7] == 1.0 and w[0, 0, 0, 8, 5] == 0.5
    assert w[0, 0, 0, 5, 5] == 0.0 and w[0, 0, 0, 6, 8] == 0.0
    assert box_frame_weights((2, 4, 3, 16, 16), ()).eq(1.0).all()  # no box: the whole frame
    frames = torch.tensor([[1.0, 0.0, 0.5], [0.0, 0.0, 0.0]])
    w = box_frame_weights((2, 4, 3, 16, 16), box, frames)
    assert w[0, 0, 0, 6, 4] == 1.0 and w[0, 0, 1, 6, 4] == 0.0 and w[0, 0, 2, 8, 5] == 0.25
    err = torch.zeros(2, 4, 3, 16, 16)
    err[:, :, 1] = 10.0  # an error on a frame of weight 0 only: not counted
    err[..., 0, 0] = 5.0  # and outside the box
    assert weighted_mean(err, w) == 0.0
    assert weighted_mean(err, torch.zeros_like(w)) == 0.0  # nothing weighted: 0, not NaN


def test_vae_crops_weight_their_part_of_the_frame_region():
    from streamavatar_cli.train.vae_stage import VAEStage

    box = (0.375, 0.40, 0.625, 0.58)
    cfg = TrainConfig.from_dict(
        {
            "data": {"source": "puppet", "seeds": [0, 1], "seconds": 1.0, "size": [64, 64]},
            "model": {"vae": {"base_dim": 8, "decoder_base_dim": 8, "dim_mult": [1, 2, 2]}},
            "vae": {"clip_frames": 5, "crop": 16, "region_box": list(box), "region_weight": 5.0},
        },
        "vae",
    )
    stage = VAEStage(cfg, World())
    whole = region_weights(64, 64, box, 5.0)
    video, region = stage.window(0, torch.Generator().manual_seed(0), crop=False)
    assert video.shape == (1, 3, 5, 64, 64) and torch.equal(region, whole)
    seen = set()
    for seed in range(40):
        video, region = stage.window(0, torch.Generator().manual_seed(seed))
        assert video.shape[-2:] == region.shape[-2:] == (16, 16)
        # the crop's weights are the whole frame's at the crop's place
        hits = [(y, x) for y in range(0, 49, 8) for x in range(0, 49, 8)
                if torch.equal(region, whole[..., y : y + 16, x : x + 16])]  # fmt: skip
        assert hits
        seen.add(float(region.max()))
    assert 6.0 in seen and 1.0 in seen  # some crops hold the mouth, some do not
    off = dataclasses.replace(
        cfg, stage_options=dataclasses.replace(cfg.stage_options, region_weight=0.0)
    )
    assert VAEStage(off, World()).window(0, torch.Generator())[1] is None
    # region_crops = 1: every crop holds the whole box (all of its extra weight)
    on_box = VAEStage(
        dataclasses.replace(
            cfg, stage_options=dataclasses.replace(cfg.stage_options, crop=24, region_crops=1.0)
        ),
        World(),
    )
    for seed in range(20):
        region = on_box.window(0, torch.Generator().manual_seed(seed))[1]
        assert region.shape[-2:] == (24, 24)
        assert torch.isclose((region - 1).sum(), (whole - 1).sum())
    no_box = dataclasses.replace(cfg.stage_options, region_box=(), region_crops=0.5)
    with pytest.raises(ValueError, match="region_box"):
        VAEStage(dataclasses.replace(cfg, stage_options=no_box), World())


def test_cosine_lr_decays_from_the_end_of_warmup_to_the_floor():
    assert [lr_factor(s, 10) for s in (0, 4, 9, 10, 500)] == [0.1, 0.5, 1.0, 1.0, 1.0]
    decay = [lr_factor(s, 10, 110, 0.1) for s in range(110)]
    assert decay[:10] == [lr_factor(s, 10) for s in range(10)]
    assert decay[10] == 1.0 and decay[-1] == pytest.approx(0.1)
    assert decay[60] == pytest.approx(0.55, abs=0.01)  # half way: the mean of 1 and the floor
    assert all(a >= b for a, b in zip(decay[10:], decay[11:], strict=False))


def test_audio_modules_get_their_own_learning_rate():
    from streamavatar_cli.models.dit import is_audio_param
    from streamavatar_cli.train.teacher import make_optimizer

    cfg = TrainConfig.from_dict({"optim": {"lr": 1e-3}}, "teacher")
    torch.manual_seed(0)
    from streamavatar_cli.config import DiTConfig

    dit = WanDiT(DiTConfig.from_dict({**DiTConfig.preset("tiny").to_dict(), **BASE_DIT}))
    opt = make_optimizer(dit, cfg, audio_lr_scale=10.0)
    rest, audio = opt.param_groups
    assert rest["lr"] == 1e-3 and audio["lr"] == pytest.approx(1e-2)
    n_audio = sum(p.numel() for n, p in dit.named_parameters() if is_audio_param(n))
    assert sum(p.numel() for p in audio["params"]) == n_audio > 0
    assert len(rest["params"]) + len(audio["params"]) == len(list(dit.parameters()))


def test_temporal_change_l1_sees_a_held_frame_that_plain_l1_forgives():
    video = torch.zeros(1, 3, 5, 8, 8)
    video[:, :, 1::2, 2:4, 2:4] = 1.0  # a mouth that opens and shuts every frame
    held = video.mean(dim=2, keepdim=True).expand_as(video)  # one frame for the whole latent
    shifted = video + 0.2  # every frame a little too bright, the motion right
    assert (held - video).abs().mean() < (shifted - video).abs().mean()
    assert temporal_change_l1(shifted, video) < 1e-6 < temporal_change_l1(held, video)
    w = region_weights(8, 8, (0.25, 0.25, 0.5, 0.5), gain=9.0)  # one frame: applies to all
    assert temporal_change_l1(held, video, w) > 2 * temporal_change_l1(held, video)
    motion = motion_weights(video, 4.0, 0.5)  # per frame: the later frame's weight
    assert torch.isclose(
        temporal_change_l1(held, video, motion),
        weighted_mean((held.diff(dim=2) - video.diff(dim=2)).abs(), motion[:, :, 1:]),
    )


def test_listen_frame_weights_follow_the_share_of_listen_audio_in_each_window():
    """Talk for 12 frames, then listen: latents 1-2 are all talk (weight 1), latent 3's window
    (frames 7-14) holds 3 listen frames, latent 4's 7 of 8, latents 5 on only listen frames
    (weight 1 + gain)."""
    import numpy as np

    from streamavatar_cli.audio import build_audio_conditioning, latent_windows
    from streamavatar_cli.audio.features import load_feature_extractor
    from streamavatar_cli.config import AudioConfig

    rng = np.random.default_rng(0)
    mask = np.array([1] * 12 + [0] * 21, np.int8)
    speech = (0.1 * rng.standard_normal(33 * 640)).astype(np.float32)
    cond = build_audio_conditioning(
        load_feature_extractor(AudioConfig("mel", layers=2, dim=16)), mask, speech, speech.copy()
    )
    listen = latent_windows(cond.listen, 8)[None]  # [1, F = 8, window, L, D]
    w = listen_frame_weights(listen, gain=4.0)
    assert w.shape == (1, 1, 8, 1, 1)
    assert w[0, 0, :, 0, 0].tolist() == pytest.approx([1, 1, 2.5, 4.5, 5, 5, 5, 5])
    assert listen_frame_weights(listen, gain=0.0) is None


def test_listen_region_weights_take_the_mouth_boxs_place_on_listen_frames():
    """Two latent frames, talk then listen: the talk frame keeps the region box's weights, the
    listen frame has the listen box's instead (1 + gain inside it, 1 elsewhere, the mouth box
    included); the listen-frame weights multiply on top."""
    listen = torch.zeros(1, 2, 8, 2, 16)
    listen[:, 1] = 0.5  # frame 1's window is all listen audio
    head, mouth = (0.25, 0.0, 0.75, 0.5), (0.5, 0.75, 1.0, 1.0)
    talk_region = region_weights(4, 4, mouth, 20.0)
    w = listen_region_weights(listen, 4, 4, head, 9.0, talk_region)
    assert w.shape == (1, 1, 2, 4, 4)
    assert torch.equal(w[0, 0, 0], talk_region[0, 0, 0])
    assert w[0, 0, 1, :2, 1:3].eq(10.0).all() and w[0, 0, 1, 2:].eq(1.0).all()
    assert w[0, 0, 1, :, 0].eq(1.0).all() and w[0, 0, 1, :, 3].eq(1.0).all()
    assert torch.equal(listen_region_weights(listen, 4, 4, head, 9.0)[0, 0, 0], torch.ones(4, 4))
    with pytest.raises(ValueError, match="region_box"):
        listen_region_weights(listen, 4, 4, (0.5, 0.0, 0.2, 0.5), gain=1.0)
    x0 = torch.zeros(1, 4, 2, 4, 4)
    both = latent_loss_weights(x0, 0.0, 0.3, mouth, 20.0, listen, 3.0, head, 9.0)
    assert torch.equal(both, w * listen_frame_weights(listen, 3.0))
    assert torch.equal(latent_loss_weights(x0, 0.0, 0.3, mouth, 20.0, listen, 0.0, head, 0.0),
                       talk_region)  # fmt: skip

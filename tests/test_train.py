"""The training pipeline at toy size: every stage learns, resumes exactly, shares the streaming
code, and writes model folders that load. Puppet data, CPU, seconds per stage."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_model_bench
from safetensors.torch import save_file

from streamavatar_cli.config import DiTConfig, StreamConfig
from streamavatar_cli.models import WanDiT
from streamavatar_cli.pipeline import StreamingGenerator
from streamavatar_cli.pipeline.model import load_model
from streamavatar_cli.train import TrainConfig, dry_run, run_stage
from streamavatar_cli.train.common import student_forward
from streamavatar_cli.train.distill import rollout

DIT = {"dim": 32, "num_heads": 2, "ffn_dim": 64, "num_layers": 2, "audio_hidden_dim": 16,
       "audio_context_dim": 16}  # fmt: skip
VAE = {"base_dim": 8, "decoder_base_dim": 8, "dim_mult": [1, 2, 2], "num_res_blocks": 1}


def config(stage: str, root: Path, *, steps: int = 30, batch: int = 2, **sections) -> TrainConfig:
    """A toy config of `stage` whose folders live under `root`."""
    data = {
        "run": {"seed": 0, "checkpoint_every": 1000, "log_every": 1},
        "optim": {"steps": steps, "batch_size": batch, "lr": 2e-3},
        "data": {"source": "puppet", "seeds": [0, 4], "seconds": 2.4, "size": [64, 64],
                 "window_latents": 6, "windows_per_clip": 2, "cache": str(root / "latents")},
        "model": {"vae_from": str(root / "vae")},
    }  # fmt: skip
    if stage == "vae":
        data["model"] = {"vae": VAE}
        data["data"]["seeds"] = [0, 2]
        data["vae"] = {"clip_frames": 5}
    elif stage == "teacher":
        data["model"]["dit"] = DIT
        data["model"]["stream"] = {"window_frames": 3, "rapr_max_distance": 7}
    else:
        data["model"]["teacher"] = str(root / "teacher")
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return TrainConfig.from_dict(data, stage)


def first_last(records: list[dict], key: str = "loss", n: int = 10) -> tuple[float, float]:
    values = [r[key] for r in records]
    return sum(values[:n]) / n, sum(values[-n:]) / n


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> dict:
    """vae -> teacher -> ode-pairs -> ode-init, each trained a little; losses recorded."""
    root = tmp_path_factory.mktemp("chain")
    losses = {}
    losses["vae"] = run_stage(config("vae", root, steps=30), root / "vae")
    losses["teacher"] = run_stage(config("teacher", root, steps=40), root / "teacher")
    run_stage(
        config(
            "ode-pairs",
            root,
            batch=4,
            ode_pairs={"samples": 8, "sampler_steps": 6, "talk_guidance": 2.0},
        ),
        root / "ode-pairs",
    )
    losses["ode-init"] = run_stage(
        config("ode-init", root, steps=40, ode_init={"pairs": str(root / "ode-pairs")}),
        root / "ode-init",
    )
    return {"root": root, "losses": losses}


def test_a_latent_cache_of_older_puppets_is_rebuilt(chain, tmp_path, monkeypatch):
    """Changing the puppets' behaviour (DOMAIN_VERSION) must not train on stale latents."""
    import shutil

    from streamavatar_cli.puppet import sample
    from streamavatar_cli.train.common import latent_data

    cache = tmp_path / "latents"
    shutil.copytree(chain["root"] / "latents", cache)
    cfg = config("teacher", chain["root"], data={"cache": str(cache)})
    index = cache / "index.json"
    assert json.loads(index.read_text())["meta"]["puppet_domain"] == sample.DOMAIN_VERSION
    before = index.stat().st_mtime_ns
    latent_data(cfg, chain["root"] / "vae")
    assert index.stat().st_mtime_ns == before  # same settings, same domain: reused
    monkeypatch.setattr(sample, "DOMAIN_VERSION", sample.DOMAIN_VERSION + 1)
    latent_data(cfg, chain["root"] / "vae")
    assert json.loads(index.read_text())["meta"]["puppet_domain"] == sample.DOMAIN_VERSION


def test_a_teacher_with_a_longer_audio_memory_gets_its_own_windows(chain, tmp_path):
    """`audio_window` / `audio_lookahead` of the DiT decide the cached windows: a cache of the
    default window is rebuilt for a teacher with more memory, and that teacher trains."""
    import shutil

    from streamavatar_cli.audio import build_audio_conditioning, latent_windows
    from streamavatar_cli.config import AudioWindow
    from streamavatar_cli.train.common import latent_data
    from streamavatar_cli.train.data import puppet_clips

    cache = tmp_path / "latents"
    shutil.copytree(chain["root"] / "latents", cache)
    dit = {**DIT, "audio_window": 12, "audio_lookahead": 0}
    cfg = config("teacher", chain["root"], steps=2, data={"cache": str(cache)},
                 model={"dit": dit})  # fmt: skip
    data = latent_data(cfg, chain["root"] / "vae")
    assert data.meta["audio_window"] == [12, 0]
    assert data["talk"].shape[2] == 12
    # the cached windows are the clip's own, 8 frames of memory and no lookahead
    clip = next(puppet_clips(cfg.data))
    features = load_model(chain["root"] / "vae").features
    cond = build_audio_conditioning(features, clip.mask, clip.agent, clip.user)
    m = int(data["start"][0]) // 4
    want = latent_windows(cond.talk, 6, AudioWindow(12, 0), first=m + 1)
    torch.testing.assert_close(data["talk"][0], want)
    records = run_stage(cfg, tmp_path / "teacher")
    assert len(records) == 2 and all(r["loss"] > 0 for r in records)
    assert load_model(tmp_path / "teacher").config.dit.audio_frames.past == 8


def test_a_latent_cache_of_another_vae_is_rebuilt(chain, tmp_path):
    """A retrained VAE (same config, other weights) must not train on the old VAE's latents."""
    import shutil

    from safetensors.torch import load_file

    from streamavatar_cli.train.common import latent_data

    cache, vae = tmp_path / "latents", tmp_path / "vae"
    shutil.copytree(chain["root"] / "latents", cache)
    shutil.copytree(chain["root"] / "vae", vae)
    cfg = config("teacher", chain["root"], data={"cache": str(cache)})
    index = cache / "index.json"
    old = load_file(cache / json.loads(index.read_text())["shards"][0])
    before = index.stat().st_mtime_ns
    latent_data(cfg, vae)
    assert index.stat().st_mtime_ns == before  # the same VAE: reused
    weights = load_file(vae / "vae.safetensors")
    save_file({k: v * 1.01 if v.is_floating_point() else v for k, v in weights.items()},
              vae / "vae.safetensors")  # fmt: skip
    latent_data(cfg, vae)
    new = load_file(cache / json.loads(index.read_text())["shards"][0])
    assert index.stat().st_mtime_ns != before
    assert not torch.equal(old["latents"], new["latents"])


def test_vae_temporal_weight_adds_the_change_term(tmp_path):
    records = run_stage(
        config("vae", tmp_path, steps=2, vae={"temporal_weight": 2.0}), tmp_path / "vae"
    )
    for r in records:  # loss = l1 + 0.5 (1 - ssim) + 1e-6 kl + 2 change
        rest = r["l1"] + 0.5 * (1 - r["ssim"]) + 1e-6 * r["kl"]
        assert r["change"] > 0 and r["loss"] == pytest.approx(rest + 2.0 * r["change"], rel=1e-5)


def test_vae_decoder_fine_tune_keeps_the_latents_and_trains_the_decoder(chain, tmp_path):
    """`[vae] train = "decoder"`: every DiT trained on the starting VAE stays valid (same
    encoder, same latent statistics, bit for bit) while the decoder learns."""
    start = chain["root"] / "vae"
    out = tmp_path / "vae-decoder"
    cfg = config(
        "vae", tmp_path, steps=12, vae={"train": "decoder", "latent_noise": 0.05},
        model={"vae_from": str(start)},
    )  # fmt: skip
    records = run_stage(cfg, out)
    before, after = load_model(start), load_model(out)
    assert after.config.vae == before.config.vae  # latents_mean / std included
    old, new = before.vae.state_dict(), after.vae.state_dict()
    frozen = [k for k in old if k.startswith(("encoder.", "conv1."))]
    assert frozen and all(torch.equal(old[k], new[k]) for k in frozen)
    assert any(not torch.equal(old[k], new[k]) for k in old if k.startswith("decoder."))
    video = torch.rand(1, 3, 5, 64, 64) * 2 - 1
    assert torch.equal(before.vae.encode(video), after.vae.encode(video))
    assert all(
        "kl" in r and r["loss"] == pytest.approx(r["l1"] + 0.5 * (1 - r["ssim"]), rel=1e-5)
        for r in records
    )  # fmt: skip  (no KL term: the encoder does not learn)
    with pytest.raises(ValueError, match="vae_from"):
        config("vae", tmp_path, vae={"train": "decoder"})
    # the export pairs a student with the fine-tuned decoder, and only with a VAE of its encoder
    tiny_model, other = tiny_model_bench(), tmp_path / "other"
    run_stage(config("vae", tmp_path, steps=1, run={"seed": 1}), other)  # another encoder
    tiny_model.export(chain["root"] / "ode-init", tmp_path / "paired", "t", 1.0, vae=out)
    paired = (tmp_path / "paired" / "vae.safetensors").read_bytes()
    assert paired == (out / "vae.safetensors").read_bytes()
    with pytest.raises(SystemExit, match="encoder"):
        tiny_model.export(chain["root"] / "ode-init", tmp_path / "bad", "t", 1.0, vae=other)


@pytest.mark.parametrize("stage", ["vae", "teacher", "ode-init"])
def test_stage_loss_goes_down(chain, stage):
    first, last = first_last(chain["losses"][stage])
    assert last < 0.9 * first, (stage, first, last)


def test_stage_outputs_are_model_folders_of_the_right_kind(chain):
    root = chain["root"]
    for stage, kind in (("vae", "base"), ("teacher", "teacher"), ("ode-init", "student")):
        model = load_model(root / stage)
        assert model.config.kind == kind
    student = load_model(root / "ode-init")
    assert student.config.stream.window_frames == 3  # inherited from the teacher's config
    assert student.config.vae.latents_std != (1.0,) * 16  # measured at the vae stage


def test_ode_pairs_hold_teacher_trajectories(chain):
    from streamavatar_cli.train.data import TensorShards

    pairs = TensorShards(chain["root"] / "ode-pairs")
    assert len(pairs) == 8
    assert pairs["x"].shape[:2] == (8, 3) and pairs["x0"].shape[2] == 6
    # level 1 is pure noise (sigma = 1): unit variance, unrelated to x0
    assert abs(float(pairs["x"][:, 0].std()) - 1.0) < 0.1
    assert (
        json.loads((chain["root"] / "ode-pairs" / "index.json").read_text())["meta"][
            "talk_guidance"
        ]
        == 2.0
    )


def test_ode_init_student_reproduces_teacher_x0_better_than_at_step_0(chain):
    """Sampled with the streaming generator from each pair's recorded starting noise, the
    trained student is closer to the teacher's x0 than the student at step 0 (the teacher's
    weights under the block-causal mask) was. One step (sigma = 1): the noise -> x0 map that
    ODE initialisation regresses, through the real cache and sampler."""
    from streamavatar_cli.train.data import TensorShards

    root = chain["root"]
    pairs, cache = TensorShards(root / "ode-pairs"), TensorShards(root / "latents")
    teacher, student = load_model(root / "teacher"), load_model(root / "ode-init")
    stream = student.config.stream.replace(steps=1)

    def error(dit) -> float:
        total = 0.0
        for n in range(len(pairs)):
            src = int(pairs["source"][n])
            lat = cache["latents"][src : src + 1]
            out = rollout(dit, stream, lat[:, :, :1], cache["talk"][src : src + 1],
                          cache["listen"][src : src + 1], seed=n, n_chunks=2, grad=False,
                          noise=pairs["x"][n : n + 1, 0])  # fmt: skip
            total += float((out - pairs["x0"][n : n + 1]).pow(2).mean())
        return total / len(pairs)

    before, after = error(teacher.dit), error(student.dit)
    assert after < 0.9 * before, (before, after)


def random_dit(seed: int = 0) -> WanDiT:
    cfg = DiTConfig.from_dict({**DiTConfig.preset("tiny").to_dict(), **DIT})
    torch.manual_seed(seed)
    dit = WanDiT(cfg).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in dit.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return dit


def guidance_inputs(seed: int):
    """A random DiT and one window's reference, noisy latents and talk/listen features."""
    g = torch.Generator().manual_seed(seed + 1)
    ref, x = torch.randn(1, 16, 1, 4, 4, generator=g), torch.randn(1, 16, 6, 4, 4, generator=g)
    talk, listen = (torch.randn(1, 6, 8, 2, 16, generator=g) for _ in range(2))
    return random_dit(seed), ref, x, talk, listen


def test_talk_guidance_is_cfg_against_zeroed_talk():
    """`guided_v` (the ode-pairs sampler's velocity): g = 1 is the plain teacher forward,
    g = 0 the forward with the talk features zeroed (the listen features kept), and in between
    and beyond it moves linearly along their difference."""
    from streamavatar_cli.train.common import bidirectional_v, guided_v

    dit, ref, x, talk, listen = guidance_inputs(5)
    sigma = torch.full((1,), 0.6)
    with torch.no_grad():
        plain = bidirectional_v(dit, ref, x, sigma, talk, listen)
        mute = bidirectional_v(dit, ref, x, sigma, torch.zeros_like(talk), listen)
        assert torch.equal(guided_v(dit, ref, x, sigma, talk, listen, 1.0), plain)
        assert (guided_v(dit, ref, x, sigma, talk, listen, 0.0) - mute).abs().max() < 1e-5
        g3 = guided_v(dit, ref, x, sigma, talk, listen, 3.0)
    assert (g3 - (mute + 3 * (plain - mute))).abs().max() < 1e-5
    assert (plain - mute).abs().mean() > 1e-3  # the talk features do change the velocity


def test_listen_guidance_adds_to_talk_guidance():
    """Both streams guided: v + (g_t - 1)(v - v(talk zeroed)) + (g_l - 1)(v - v(listen zeroed));
    listen guidance alone leaves the talk features in every pass."""
    from streamavatar_cli.train.common import bidirectional_v, guided_v

    dit, ref, x, talk, listen = guidance_inputs(7)
    sigma = torch.full((1,), 0.4)
    with torch.no_grad():
        plain = bidirectional_v(dit, ref, x, sigma, talk, listen)
        no_talk = bidirectional_v(dit, ref, x, sigma, torch.zeros_like(talk), listen)
        no_listen = bidirectional_v(dit, ref, x, sigma, talk, torch.zeros_like(listen))
        listen_only = guided_v(dit, ref, x, sigma, talk, listen, 1.0, 2.5)
        both = guided_v(dit, ref, x, sigma, talk, listen, 2.0, 2.5)
    assert (listen_only - (plain + 1.5 * (plain - no_listen))).abs().max() < 1e-5
    assert (both - (plain + (plain - no_talk) + 1.5 * (plain - no_listen))).abs().max() < 1e-5
    assert (plain - no_listen).abs().mean() > 1e-3  # the listen features do change the velocity


def test_teacher_audio_dropout_zeroes_each_stream_per_sample():
    """`talk_dropout` / `listen_dropout` zero one stream of a sample, never the other; p = 0
    draws nothing (the run's random stream is that of a config without the option), p = 1
    zeroes every sample, and a sample's draw does not depend on the batch it is in."""
    from streamavatar_cli.train.config import TeacherStage
    from streamavatar_cli.train.teacher import drop_audio

    talk, listen = torch.ones(16, 3, 8, 2, 4), torch.full((16, 3, 8, 2, 4), 2.0)

    def gens(seed=0, idx=range(16)):
        return [torch.Generator().manual_seed(seed * 1000 + i) for i in idx]

    gs = gens()
    t, li = drop_audio(talk, listen, gs, TeacherStage())
    assert torch.equal(t, talk) and torch.equal(li, listen)
    assert torch.equal(gs[0].get_state(), gens()[0].get_state())  # nothing drawn

    t, li = drop_audio(talk, listen, gens(), TeacherStage(listen_dropout=1.0))
    assert torch.equal(t, talk) and not li.any()
    t, li = drop_audio(talk, listen, gens(), TeacherStage(talk_dropout=0.5, listen_dropout=0.5))
    talk_kept = t.flatten(1).amax(1) > 0
    listen_kept = li.flatten(1).amax(1) > 0
    assert 0 < talk_kept.sum() < 16 and 0 < listen_kept.sum() < 16
    assert not torch.equal(talk_kept, listen_kept)  # independent draws
    t4, li4 = drop_audio(talk[4:8], listen[4:8], gens(idx=range(4, 8)),
                         TeacherStage(talk_dropout=0.5, listen_dropout=0.5))  # fmt: skip
    assert torch.equal(t4, t[4:8]) and torch.equal(li4, li[4:8])


def test_teacher_forcing_forward_equals_streaming():
    """The ode-init forward (context copies + query copies under `teacher_forcing_layout`)
    computes what the streaming generator computes, chunk by chunk, RAPR offset 0."""
    dit = random_dit()
    stream = StreamConfig(window_frames=3, rapr_max_distance=7, seed=5)
    g = torch.Generator().manual_seed(2)
    ref = torch.randn(1, 16, 1, 4, 4, generator=g)
    n_chunks = 4
    talk = torch.randn(1, 3 * n_chunks, 8, 2, 16, generator=g)
    listen = torch.randn(1, 3 * n_chunks, 8, 2, 16, generator=g)
    gen = StreamingGenerator(dit, stream, keep_trace=True)
    gen.start(ref)
    traces = []
    for i in range(n_chunks):
        gen.next_chunk(talk[:, 3 * i : 3 * i + 3], listen[:, 3 * i : 3 * i + 3])
        traces.append(gen.trace)
    sigmas = stream.sigmas()
    context = torch.cat([t.cache_input for t in traces], dim=2)
    for level in range(len(sigmas)):
        query = torch.cat([t.step_inputs[level] for t in traces], dim=2)
        q_sigma = torch.full((1, 3 * n_chunks), sigmas[level])
        with torch.no_grad():
            v = student_forward(dit, stream, ref, context, sigmas[-1], query, q_sigma, talk, listen)
        expected = torch.cat([t.step_outputs[level] for t in traces], dim=2)
        assert (v - expected).abs().max() < 1e-4
    assert expected.abs().mean() > 0.1


def test_distill_rollout_is_the_streaming_generator():
    """Student forcing runs `StreamingGenerator` itself: same latents to 1e-6, and with
    `grad` only the last step of each chunk carries gradient (the output has a graph)."""
    dit = random_dit(3)
    stream = StreamConfig(window_frames=3, rapr_max_distance=7, seed=11)
    g = torch.Generator().manual_seed(4)
    ref = torch.randn(1, 16, 1, 4, 4, generator=g)
    talk = torch.randn(1, 9, 8, 2, 16, generator=g)
    gen = StreamingGenerator(dit, stream)
    gen.start(ref)
    with torch.no_grad():
        expected = torch.cat(
            [gen.next_chunk(talk[:, i : i + 3], talk[:, i : i + 3]) for i in (0, 3, 6)], 2
        )
    dit.requires_grad_(True)
    got = rollout(dit, stream, ref, talk, talk, seed=11, n_chunks=3, grad=True)
    assert (got - expected).abs().max() < 1e-6
    got.pow(2).mean().backward()
    assert dit.head.head.weight.grad is not None


@pytest.mark.parametrize("option", ["listen_weight", "listen_region_weight"])
@pytest.mark.parametrize("stage", ["teacher", "ode-init"])
def test_listen_weights_reweight_the_stage_loss(chain, stage, option, tmp_path):
    """[teacher] / [ode_init] listen_weight and listen_region_weight change the loss of a batch
    with listen frames (same data, noise and initial weights): the options reach the loss."""
    root = chain["root"]
    section = stage.replace("-", "_")
    extra = {"pairs": str(root / "ode-pairs")} if stage == "ode-init" else {}
    if option == "listen_region_weight":
        extra["listen_region_box"] = [0.25, 0.0, 0.75, 0.5]

    def first_loss(weight: float, out: str) -> float:
        opts = {section: {**extra, option: weight}}
        return run_stage(config(stage, root, steps=1, **opts), tmp_path / out)[0]["loss"]

    assert first_loss(0.0, "off") != pytest.approx(first_loss(4.0, "on"), rel=1e-4)


def test_teacher_temporal_weight_adds_the_loss_of_the_changes(chain, tmp_path):
    """[teacher] temporal_weight: the first step's loss grows by a positive term (an L1 of the
    frame-to-frame changes of the flow error, same data, noise and initial weights)."""
    root = chain["root"]

    def first_loss(weight: float, out: str) -> float:
        cfg = config("teacher", root, steps=1, teacher={"temporal_weight": weight})
        return run_stage(cfg, tmp_path / out)[0]["loss"]

    off, on = first_loss(0.0, "off"), first_loss(2.0, "on")
    assert on > off * 1.01


@pytest.mark.parametrize("stage", ["teacher", "ode-init"])
def test_bf16_runs_the_forward_in_bf16_and_keeps_fp32_weights(chain, stage, tmp_path):
    """run.dtype = "bf16" is mixed precision: the DiT's linear layers compute in bf16 (seen by a
    hook), the first loss is the fp32 one to bf16 accuracy but not bit-equal (so the cast is
    real), and the exported weights are fp32."""
    root = chain["root"]
    extra = {"ode_init": {"pairs": str(root / "ode-pairs")}} if stage == "ode-init" else {}
    seen: set[torch.dtype] = set()
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda m, _, out: seen.add(out.dtype) if isinstance(m, torch.nn.Linear) else None
    )
    try:
        bf16 = run_stage(
            config(stage, root, steps=2, run={"dtype": "bf16"}, **extra), tmp_path / "b"
        )
    finally:
        hook.remove()
    fp32 = run_stage(config(stage, root, steps=2, **extra), tmp_path / "f")
    assert torch.bfloat16 in seen
    assert bf16[0]["loss"] == pytest.approx(fp32[0]["loss"], rel=0.05)
    assert bf16[0]["loss"] != fp32[0]["loss"]
    dit = load_model(tmp_path / "b").dit
    assert {p.dtype for p in dit.parameters()} == {torch.float32}


def test_resume_continues_with_the_same_losses(chain, tmp_path):
    root = chain["root"]
    full = run_stage(config("teacher", root, steps=6), tmp_path / "full")
    part = run_stage(config("teacher", root, steps=6), tmp_path / "part", max_steps=3)
    rest = run_stage(config("teacher", root, steps=6), tmp_path / "part", resume=True)
    assert len(part) == 3 and len(rest) == 3
    assert [r["loss"] for r in part + rest] == pytest.approx([r["loss"] for r in full], abs=1e-6)
    log = (tmp_path / "part" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])  # bf16: as configs/wan5b-distill.toml
def test_distill_runs_and_writes_a_student(chain, tmp_path, dtype):
    root = chain["root"]
    cfg = config("distill", root, steps=3, batch=1, run={"dtype": dtype},
                 model={"init": str(root / "ode-init")},
                 distill={"rollout_chunks": 2, "talk_guidance": 2.0})  # fmt: skip
    records = run_stage(cfg, tmp_path / "distill")
    assert len(records) == 3 and all(abs(r["fake_loss"]) < 1e3 for r in records)
    assert load_model(tmp_path / "distill").config.kind == "student"


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])  # bf16: as configs/wan5b-refine.toml
def test_refine_runs_and_writes_a_student(chain, tmp_path, dtype):
    """The adversarial stage end to end at toy size: discriminator (Q-Formers on the teacher's
    blocks, local and global heads), relativistic losses, R1/R2 by perturbation."""
    root = chain["root"]
    cfg = config("refine", root, steps=2, batch=1, run={"dtype": dtype},
                 model={"init": str(root / "ode-init")}, refine={"rollout_chunks": 2})  # fmt: skip
    records = run_stage(cfg, tmp_path / "refine")
    assert len(records) == 2
    assert all(abs(r["d_loss"]) < 1e3 and r["r1r2"] >= 0 for r in records)
    assert load_model(tmp_path / "refine").config.kind == "student"


def test_refine_can_regress_the_mouth_alone_and_anchor_the_rest(chain, tmp_path):
    """adversarial_weight = 0, a regression box and an anchor: the student learns from the
    real clips' latents inside the box on talk frames, is held to its own starting rollout
    elsewhere, and no discriminator is trained."""
    root = chain["root"]
    cfg = config("refine", root, steps=2, batch=1, model={"init": str(root / "ode-init")},
                 refine={"rollout_chunks": 2, "adversarial_weight": 0.0, "regression_weight": 1.0,
                         "regression_box": [0.25, 0.25, 0.75, 0.75], "anchor_weight": 1.0})  # fmt: skip
    records = run_stage(cfg, tmp_path / "refine")
    assert len(records) == 2 and all("d_loss" not in r for r in records)
    assert set(torch.load(tmp_path / "refine" / "checkpoint.pt")["modules"]) == {"student"}
    assert records[0]["regression"] > 0
    assert records[0]["anchor"] == 0.0 < records[1]["anchor"]  # same weights, then moved away
    before = load_model(root / "ode-init").dit.state_dict()
    after = load_model(tmp_path / "refine").dit.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # regression_l1: the same first rollout scored by L1 (mean |e|^2 <= mean e^2, Jensen)
    l1_cfg = dataclasses.replace(
        cfg, stage_options=dataclasses.replace(cfg.stage_options, regression_l1=True)
    )
    l1 = run_stage(dataclasses.replace(l1_cfg, optim=dataclasses.replace(cfg.optim, steps=1)),
                   tmp_path / "refine-l1")[0]["regression"]  # fmt: skip
    assert 0 < l1**2 <= records[0]["regression"] and l1 != records[0]["regression"]
    with pytest.raises(ValueError, match="regression_box"):
        config("refine", root, refine={"regression_box": [0.5, 0.1, 0.2, 0.3]})
    with pytest.raises(ValueError, match="both 0"):
        run_stage(config("refine", root, steps=1, batch=1, model={"init": str(root / "ode-init")},
                         refine={"adversarial_weight": 0.0}), tmp_path / "none")  # fmt: skip


def test_two_processes_follow_the_one_process_curve(chain, tmp_path):
    """torchrun --nproc_per_node 2 (gloo): each process takes half of the global batch and
    gradients are averaged, so the loss curve equals one process's to float tolerance."""
    root = chain["root"]
    cfg = config("teacher", root, steps=4, batch=2)
    single = run_stage(cfg, tmp_path / "one")
    script = tmp_path / "cfg.json"
    script.write_text(json.dumps({"root": str(root), "out": str(tmp_path / "two")}))
    code = (
        f"import json,sys; from pathlib import Path; sys.path.insert(0, {str(Path(__file__).parent)!r});"
        "from test_train import config; from streamavatar_cli.train import run_stage;"
        f"a=json.load(open({str(script)!r}));"
        "r=run_stage(config('teacher', Path(a['root']), steps=4, batch=2), Path(a['out']));"
        # rank 0 alone prints: two ranks writing to one pipe can merge their lines
        "import os; os.environ['RANK'] == '0' and print('LOSSES', json.dumps([x['loss'] for x in r]))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as sock:  # a free port, so parallel or repeated runs cannot collide
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(port), "--no-python",
         sys.executable, "-c", code],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("LOSSES"))
    two = json.loads(line.split(" ", 1)[1])
    assert two == pytest.approx([r["loss"] for r in single], abs=1e-5)


def test_base_checkpoint_init_gives_the_base_output(tmp_path):
    """A teacher initialised from an official-layout Wan checkpoint (no audio weights) computes
    exactly the base model at step 0: the audio modules start with zero output projections."""
    base = random_dit(7)
    folder = tmp_path / "wan"
    folder.mkdir()
    state = {k: v for k, v in base.state_dict().items()
             if not (k.startswith(("audio_proj.", "listen_proj.", "prompt_context"))
                     or ".audio_attn." in k or ".listen_attn." in k)}  # fmt: skip
    save_file({k: v.contiguous() for k, v in state.items()},
              str(folder / "diffusion_pytorch_model.safetensors"))  # fmt: skip
    cfg = base.config
    (folder / "config.json").write_text(json.dumps({
        "_class_name": "WanModel", "dim": cfg.dim, "ffn_dim": cfg.ffn_dim, "num_heads": cfg.num_heads,
        "num_layers": cfg.num_layers, "in_dim": cfg.in_dim, "out_dim": cfg.out_dim,
        "freq_dim": cfg.freq_dim, "text_dim": cfg.text_dim, "text_len": cfg.text_len,
    }))  # fmt: skip
    from streamavatar_cli.train.teacher import init_teacher

    teacher = init_teacher(
        config(
            "teacher",
            tmp_path,
            model={"init": str(folder), "vae_from": ""},
            teacher={"text_encoder": "none"},
        )  # the prompt path: test_train_prompt.py
    ).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 3, 4, 4, generator=g)
    t = torch.tensor([[0.0, 500.0, 500.0]])
    audio = torch.randn(1, 2, 8, 2, 16, generator=g)
    with torch.no_grad():
        expected = base(x, t)
        got = teacher(x, t, talk_audio=audio, listen_audio=audio)
    assert (got - expected).abs().max() < 1e-5


def test_unknown_config_keys_are_errors(tmp_path):
    with pytest.raises(ValueError, match="lrr"):
        TrainConfig.from_dict({"optim": {"lrr": 1.0}}, "teacher")
    with pytest.raises(ValueError, match="teacher_opts"):
        TrainConfig.from_dict({"teacher_opts": {}}, "teacher")


@pytest.mark.parametrize("name", ["region_box", "listen_region_box"])
def test_a_bad_loss_box_is_a_config_error(name):
    """Caught when the config is read, not at the first step after a cache build."""
    weight = name.replace("_box", "_weight")
    with pytest.raises(ValueError, match=name):
        TrainConfig.from_dict({"teacher": {name: [0.5, 0.1, 0.2, 0.3], weight: 2.0}}, "teacher")
    with pytest.raises(ValueError, match=name):
        TrainConfig.from_dict({"ode_init": {weight: 2.0}}, "ode-init")  # weighted, no box
    assert TrainConfig.from_dict({"teacher": {name: [0.5, 0.1, 0.2, 0.3]}}, "teacher")  # off


def test_dry_run_counts_the_5b_teacher_without_weights():
    configs = Path(__file__).parent.parent / "configs"
    plan = dry_run(TrainConfig.load(configs / "wan5b-teacher.toml", "teacher"))
    assert 6.0e9 < plan.trainable_params < 7.5e9  # 5.0 B backbone + 1.6 B audio modules
    assert plan.step_flops > 1e14


def test_train_command_bad_config_is_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim]\nsteps = 'many'\n[nonsense]\n")
    proc = subprocess.run(
        [sys.executable, "-m", "streamavatar_cli", "train", "teacher", "--config", str(bad),
         "--out", str(tmp_path / "o")], capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "nonsense" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_make_train_tiny_reads_only_folders_made_before():
    """`make train-tiny` from nothing: every folder a stage reads (its VAE, teacher, starting
    weights, ODE pairs) and every folder an export reads is written by an earlier line, and
    the last line writes the bundled weights."""
    root = Path(__file__).parent.parent
    recipe = root.joinpath("Makefile").read_text().split("\ntrain-tiny:", 1)[1]
    lines = [ln.split() for ln in recipe.split("\n\n", 1)[0].splitlines()[1:]]
    made: list[str] = []
    for words in lines:
        opt = {w: words[i + 1] for i, w in enumerate(words[:-1]) if w.startswith("--")}
        if words[0] == "$(TRAIN)":
            cfg = TrainConfig.load(root / opt["--config"], words[1])
            reads = [cfg.model.vae_from, cfg.model.teacher, cfg.model.init]
            reads.append(getattr(cfg.stage_options, "pairs", ""))
        elif "export" in words:
            reads = [opt["--from"], opt.get("--vae", "")]
        else:
            continue
        missing = [r for r in reads if r and r not in made]
        assert not missing, (words, missing, made)
        made.append(opt.get("--out") or opt["--to"])
    assert made[-1] == "weights/streamavatar-tiny" and len(made) >= 9, made


def test_shipped_tiny_configs_parse():
    configs = Path(__file__).parent.parent / "configs"
    for stage in ("vae", "teacher", "ode-pairs", "ode-init", "distill"):
        cfg = TrainConfig.load(configs / f"tiny-{stage}.toml", stage)
        assert cfg.data.seeds[1] <= 100_000  # training seeds stay below the evaluation seeds
        if stage in ("ode-pairs", "ode-init", "distill"):  # the student's teacher: stage 1c
            assert str(cfg.model.teacher) == "runs/tiny/teacher-nods"
    assert dataclasses.is_dataclass(cfg)
    # `make train-tiny`'s teacher stages chain: 1 -> 1b (mouth) -> 1c (nods)
    mouth = TrainConfig.load(configs / "tiny-teacher-mouth.toml", "teacher")
    nods = TrainConfig.load(configs / "tiny-teacher-nods.toml", "teacher")
    assert (
        str(mouth.model.init) == "runs/tiny/teacher"
        and str(nods.model.init) == "runs/tiny/teacher-mouth"
    )
    assert nods.data.seeds[1] <= 100_000 and nods.data.cache != mouth.data.cache
    # the last stage refines the exported ODE-init student on the other stages' cache
    refine = TrainConfig.load(configs / "tiny-refine.toml", "refine")
    ode_init = TrainConfig.load(configs / "tiny-ode-init.toml", "ode-init")
    assert str(refine.model.init) == str(refine.model.teacher) == "runs/tiny/student"
    assert refine.data == ode_init.data and refine.stage_options.regression_box == (
        TrainConfig.load(configs / "tiny-teacher-mouth.toml", "teacher").stage_options.region_box
    )
    # the VAE's two continuations train every weight on long windows from their first step;
    # the decoder fine-tune starts from the last one and keeps its encoder
    vae = TrainConfig.load(configs / "tiny-vae.toml", "vae")
    for name, start in (("more", "runs/tiny/vae"), ("more2", "runs/tiny/vae-more")):
        more = TrainConfig.load(configs / f"tiny-vae-{name}.toml", "vae")
        assert str(more.model.vae_from) == start and more.stage_options.train == "all"
        assert more.stage_options.long_from == 1 and more.data == vae.data
    decoder = TrainConfig.load(configs / "tiny-vae-decoder.toml", "vae")
    assert decoder.stage_options.train == "decoder"
    assert decoder.model.vae_from == "runs/tiny/vae-more2"
    assert decoder.data.seeds[1] <= 100_000 and decoder.data.size == vae.data.size
    assert decoder.stage_options.region_box == vae.stage_options.region_box
    # the ablation's students differ from the default one in their stream switch only
    default = TrainConfig.load(configs / "tiny-ode-init.toml", "ode-init")
    for variant, switch in (("no-rapr", {"rapr": False}), ("no-sink", {"sink": False})):
        cfg = TrainConfig.load(configs / f"tiny-ode-init-{variant}.toml", "ode-init")
        assert cfg.model.stream == switch
        assert dataclasses.replace(cfg, model=default.model, source=default.source) == default

"""`streamavatar bench`: the FLOP count against torch's FlopCounterMode, and that every
benchmark runs and reports sane structure. Never asserts on time or speed ratios."""

from __future__ import annotations

import dataclasses
import json
import logging
import math

import pytest
import torch
from typer.testing import CliRunner

from streamavatar_cli import bench
from streamavatar_cli.bench.flops import count_chunk, count_vae_frame
from streamavatar_cli.bench.stream import stream_memory_task
from streamavatar_cli.cli import app
from streamavatar_cli.config import MODEL_PRESETS, DiTConfig, StreamConfig, VAEConfig
from streamavatar_cli.models import WanDiT
from streamavatar_cli.models.dit import compile_blocks
from streamavatar_cli.pipeline.stream import StreamingGenerator

# 928x704 pixels: a 44 x 58 latent, 22 x 29 = 638 DiT tokens per frame (wan22-backbone.md 5.2).
LATENT_928x704 = (44, 58)


def within(analytic: float, counted: float, tolerance: float = 0.05) -> bool:
    return abs(analytic / counted - 1) <= tolerance


@pytest.mark.parametrize(
    "stream",
    [StreamConfig(), StreamConfig(sink=False, cache_update="clean", steps=2)],
    ids=["default", "nosink-clean"],
)
def test_dit_flops_match_flop_counter_at_5b_width(stream):
    """Real 5B widths on the meta device (two of the 30 layers: the count is per layer)."""
    cfg = dataclasses.replace(DiTConfig.preset("wan2.2-ti2v-5b"), num_layers=2)
    key_frames = stream.sink_frames + stream.window_frames + stream.chunk_frames
    analytic = bench.dit_chunk_flops(cfg, 22 * 29, stream.chunk_frames, key_frames)
    forwards = stream.steps + (stream.cache_update == "clean")
    assert within(analytic.chunk(forwards), count_chunk(cfg, LATENT_928x704, stream))
    assert analytic.self_attention > 0 and analytic.audio > 0


def test_vae_flops_match_flop_counter_on_wan22():
    cfg = VAEConfig.preset("wan2.2")
    counted = count_vae_frame(cfg, LATENT_928x704)
    assert within(bench.vae_decode_flops(cfg, LATENT_928x704), counted)
    # The reference numbers of wan22-backbone.md 5.4: 48.1 TFLOP steady, 14.9 first frame.
    assert math.isclose(counted / 1e12, 48.1, rel_tol=0.01)
    assert math.isclose(
        bench.vae_decode_flops(cfg, LATENT_928x704, first=True) / 1e12, 14.9, rel_tol=0.01
    )


def test_flops_report_checks_itself_and_implies_rtf():
    report = bench.flops_report("tiny", (256, 128), tflops=1e-3)
    assert within(report.dit_chunk, report.counted_dit_chunk)
    assert within(report.vae_frame, report.counted_vae_frame)
    assert report.forwards_per_chunk == 3 and report.dit_rtf > 0 and report.vae_rtf > 0
    assert any("FlopCounterMode" in line for line in report.lines())


def test_flops_report_rejects_bad_values():
    with pytest.raises(ValueError, match="multiples of 16"):
        bench.flops_report("tiny", (250, 256), check=False)
    with pytest.raises(ValueError, match="unknown model preset"):
        bench.flops_report("nope", check=False)


def test_bench_flops_command_prints_json():
    result = CliRunner().invoke(
        app, ["bench", "--flops", "--model", "tiny", "--resolution", "64x64", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["resolution"] == [64, 64] and set(data["paper_rtf"]) == {"dit", "vae"}
    assert data["counted_dit_chunk"] > 0


def check_result(result: bench.Result) -> dict:
    data = result.to_dict()
    assert math.isfinite(result.ratio) and result.ratio > 0
    assert isinstance(result.ok, bool) and data["title"] and data["target"]
    assert result.title in result.line()
    json.dumps(data)
    return data


def test_streaming_benchmarks_run_and_the_recompute_baseline_is_exact():
    check_result(
        bench.stream_flat_cost(dim=64, layers=1, latent=(4, 4), early=3, late=12, rounds=3)
    )
    speedup = bench.cache_speedup(dim=64, latent=(4, 4), chunks=6, warm=4)
    check_result(speedup)
    assert speedup.max_abs_diff <= 1e-4  # cached streaming == recomputing the window (1 layer)


def test_memory_task_reports_constant_state():
    short, long = (stream_memory_task(chunks=n, resolution=32) for n in (2, 6))
    assert short["kv_cache_bytes"] == long["kv_cache_bytes"] > 0
    assert short["decoder_state_bytes"] == long["decoder_state_bytes"] > 0
    assert long["frames"] == 1 + 6 * 12 and long["peak_rss_bytes"] >= long["setup_peak_rss_bytes"]


def test_stream_memory_runs_children():
    check_result(bench.stream_memory(long_seconds=1.0, short_seconds=0.5, resolution=32))


def test_versus_diffusers_agree_on_output():
    pytest.importorskip("diffusers")
    dit = bench.dit_vs_diffusers(dim=64, layers=1, latent=(2, 4, 4), rounds=1)
    vae = bench.vae_vs_diffusers(decoder_dim=16, latent=(2, 2, 2), rounds=1)
    for result in (dit, vae):
        check_result(result)
        assert result.max_abs_diff <= 1e-4


def test_render_speed_runs():
    data = check_result(bench.render_speed(seconds=1.0, size=64))
    assert data["first_frame_s"] > 0 and data["dit_rtf"] > 0 and data["vae_rtf"] > 0


def test_run_suite_rejects_an_unknown_size():
    with pytest.raises(ValueError, match="quick"):
        bench.run_suite("huge")


def test_compile_falls_back_to_eager_when_compiling_fails(monkeypatch, caplog):
    def broken_compile(fn, **kwargs):
        def call(*args, **kw):
            raise RuntimeError("no C++ compiler")

        return call

    torch.manual_seed(0)
    model = WanDiT(MODEL_PRESETS["tiny"].dit).eval()
    x = torch.randn(1, model.config.in_dim, 2, 4, 4)
    with torch.no_grad():
        expected = model(x, torch.tensor([[0.0, 500.0]]))
        monkeypatch.setattr(torch, "compile", broken_compile)
        compile_blocks(model)
        with caplog.at_level(logging.WARNING):
            got = model(x, torch.tensor([[0.0, 500.0]]))
    assert torch.equal(got, expected)
    assert "running eagerly" in caplog.text


@pytest.mark.slow
def test_compiled_stream_equals_eager_on_cpu():
    """The real `torch.compile` path on a CPU (tens of seconds of compiling)."""
    torch.manual_seed(0)
    eager = WanDiT(MODEL_PRESETS["tiny"].dit).eval()
    compiled = WanDiT(MODEL_PRESETS["tiny"].dit).eval()
    compiled.load_state_dict(eager.state_dict())
    ref = torch.randn(1, eager.config.in_dim, 1, 4, 4)
    outputs = []
    for model, flag in ((eager, False), (compiled, True)):
        generator = StreamingGenerator(model, StreamConfig(), compile=flag)
        generator.start(ref)
        outputs.append(torch.cat([generator.next_chunk() for _ in range(3)], dim=2))
    assert (outputs[0] - outputs[1]).abs().max().item() <= 1e-4


def test_bench_latency_feeds_a_pipe_at_real_time_and_reports_every_chunk():
    """8 s of audio through `render -a - -o -` at real time (about 15 s of wall time)."""
    result = CliRunner().invoke(
        app, ["bench", "--latency", "--quick", "--resolution", "32x32", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["size"] == 32 and data["model"] == "random-tiny" and data["seconds"] == 8.0
    assert data["chunks"] == (8 * 25 - 1) // 12 - 1  # every chunk after the first, timed
    assert 0 < data["median_s"] <= data["p95_s"] and data["first_frame_s"] > 0


def test_bench_latency_wants_square_frames():
    result = CliRunner().invoke(app, ["bench", "--latency", "--resolution", "64x32"])
    assert result.exit_code == 2 and "--latency renders square frames" in result.output

"""The streaming generator equals one full forward under the explicit block-causal mask."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from streamavatar_cli.config import DiTConfig, StreamConfig
from streamavatar_cli.models import WanDiT
from streamavatar_cli.models.attention import FrameMaskAttention
from streamavatar_cli.models.rapr import chunk_context, chunk_start, rope_positions
from streamavatar_cli.pipeline import StreamingGenerator

CFG = dataclasses.replace(DiTConfig.preset("tiny"), num_layers=2)
N_CHUNKS = 11  # 33 generated frames: longer than sink (4) + window (6), past RAPR's cap (10)


@pytest.fixture(scope="module")
def dit() -> WanDiT:
    """Random weights everywhere (audio modules and prompt too), so every path matters."""
    torch.manual_seed(0)
    model = WanDiT(CFG).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        model.prompt_context.normal_(generator=g)
    return model


def audio_windows(n_chunks: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (1, CFG.audio_window, CFG.audio_feature_layers, CFG.audio_feature_dim)
    return [torch.randn(1, 3, *shape[1:], generator=g) for _ in range(n_chunks)]


def run_stream(dit, cfg, ref, n_chunks, talk, listen):
    gen = StreamingGenerator(dit, cfg, keep_trace=True)
    gen.start(ref)
    traces, outputs = [], []
    for i in range(n_chunks):
        outputs.append(gen.next_chunk(talk[i], listen[i]))
        traces.append(gen.trace)
    return gen, traces, outputs


def reference_forward(dit, cfg, ref, traces, talk, listen):
    """All frames in one forward: [reference | cache inputs of every chunk | every step's
    input of every chunk], with the explicit mask and RAPR positions of `rapr.py`."""
    n_steps, c = len(traces[0].step_inputs), cfg.chunk_frames
    slots = [(ref, 0.0, 0, None)]  # (latent [B,C,1,h,w], t, latent frame, owning group)
    audio_t, audio_l = [], []
    for i, tr in enumerate(traces, start=1):
        groups = [("ctx", tr.cache_input, tr.cache_timestep)]
        groups += [(("q", j), tr.step_inputs[j], tr.step_timesteps[j]) for j in range(n_steps)]
        for name, x, t in groups:
            for m in range(c):
                slots.append((x[:, :, m : m + 1], t, tr.frames[m], (i, name)))
                audio_t.append(talk[i - 1][:, m])
                audio_l.append(listen[i - 1][:, m])
    n = len(slots)
    ctx_slot = {s[2]: a for a, s in enumerate(slots) if s[3] is None or s[3][1] == "ctx"}
    mask = torch.zeros(n, n, dtype=torch.bool)
    positions = torch.zeros(n, n, dtype=torch.long)
    mask[0, 0] = True
    for a, (_, _, _, group) in enumerate(slots):
        if group is None:
            continue
        chunk = group[0]
        start = chunk_start(chunk, c)
        context = chunk_context(chunk, cfg)
        keys = [ctx_slot[f] for f in context.sink + context.window]
        keys += [b for b, s in enumerate(slots) if s[3] == group]
        for b in keys:
            mask[a, b] = True
            positions[a, b] = rope_positions([slots[b][2]], start, cfg)[0]
    x = torch.cat([s[0] for s in slots], dim=2)
    t = torch.tensor([[s[1] for s in slots]])
    h, w = ref.shape[3] // 2, ref.shape[4] // 2
    attention = FrameMaskAttention(mask, positions, h, w, CFG.head_dim, CFG.rope_theta, "cpu")
    with torch.no_grad():
        out = dit(
            x, t, talk_audio=torch.stack(audio_t, 1), listen_audio=torch.stack(audio_l, 1),
            attention=attention,
        )  # fmt: skip
    return out, slots


@pytest.mark.parametrize("cache_update", ["noisy", "clean"])
@pytest.mark.parametrize("sink", [True, False], ids=["sink", "nosink"])
@pytest.mark.parametrize("rapr", [True, False], ids=["rapr", "vanilla"])
def test_streaming_equals_full_masked_forward(dit, rapr, sink, cache_update):
    cfg = StreamConfig(rapr=rapr, sink=sink, cache_update=cache_update, seed=7)
    ref = torch.randn(1, CFG.in_dim, 1, 4, 6, generator=torch.Generator().manual_seed(2))
    talk, listen = audio_windows(N_CHUNKS, 3), audio_windows(N_CHUNKS, 4)
    _, traces, _ = run_stream(dit, cfg, ref, N_CHUNKS, talk, listen)
    out, slots = reference_forward(dit, cfg, ref, traces, talk, listen)
    worst = 0.0
    for i, tr in enumerate(traces, start=1):
        for j, v in enumerate(tr.step_outputs):
            idx = [a for a, s in enumerate(slots) if s[3] == (i, ("q", j))]
            worst = max(worst, (out[:, :, idx] - v).abs().max().item())
    assert worst <= 1e-4
    assert out.abs().mean() > 0.1  # the comparison is between non-trivial outputs


def count_dit_passes(gen) -> list[int]:
    """Wrap `gen._dit` to count the DiT forwards of each `next_chunk` call."""
    counts, plain = [0], gen._dit

    def counted(*args, **kw):
        counts[-1] += 1
        return plain(*args, **kw)

    gen._dit = counted
    return counts


def test_listen_guidance_guides_only_its_first_steps_and_only_chunks_that_listen(dit):
    """g != 1 with listen_guidance_steps=1: step 0's velocity is v + (g - 1) (v - v(listen
    zeroed)), one extra DiT pass per chunk and none in later steps; a chunk whose listen
    features are all zero (the agent is talking) is the plain stream's, pass for pass."""
    ref = torch.randn(1, CFG.in_dim, 1, 2, 4, generator=torch.Generator().manual_seed(9))
    talk, listen = audio_windows(3, 5), audio_windows(3, 6)
    unheard = [torch.zeros_like(a) for a in listen]
    cfg, g = StreamConfig(seed=3), 4.0
    guided_cfg = cfg.replace(listen_guidance=g, listen_guidance_steps=1)
    _, g_traces, _ = run_stream(dit, guided_cfg, ref, 1, talk, listen)
    _, p_traces, _ = run_stream(dit, cfg, ref, 1, talk, listen)
    _, u_traces, _ = run_stream(dit, cfg, ref, 1, talk, unheard)
    v1, v0 = p_traces[0].step_outputs[0], u_traces[0].step_outputs[0]
    assert not torch.allclose(v1, v0, atol=1e-3)  # the listen features matter in this DiT
    expected = v1 + (g - 1) * (v1 - v0)
    torch.testing.assert_close(g_traces[0].step_outputs[0], expected, rtol=0, atol=1e-5)

    passes = {}
    for name, c, lis in [("plain", cfg, listen), ("first", guided_cfg, listen),
                         ("every", cfg.replace(listen_guidance=g), listen),
                         ("silent-plain", cfg, unheard), ("silent-guided", guided_cfg, unheard)]:  # fmt: skip
        gen = StreamingGenerator(dit, c)
        gen.start(ref)
        counts, outs = count_dit_passes(gen), []
        for i in range(3):
            outs.append(gen.next_chunk(talk[i], lis[i]))
            counts.append(0)
        passes[name] = (counts[:-1], outs)
    assert passes["plain"][0] == [3, 3, 3]
    assert passes["first"][0] == [4, 4, 4] and passes["every"][0] == [6, 6, 6]
    assert passes["silent-guided"][0] == [3, 3, 3]
    silent = zip(passes["silent-guided"][1], passes["silent-plain"][1], strict=True)
    assert all(torch.equal(a, b) for a, b in silent)


def test_evicted_context_changes_nothing_and_visible_context_does(dit):
    """A control for the equivalence: perturbing a frame the window has evicted must not
    change the next chunk; perturbing a visible one must."""
    cfg = StreamConfig(seed=3)
    ref = torch.randn(1, CFG.in_dim, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    talk, listen = audio_windows(8, 1), audio_windows(8, 2)
    _, traces, _ = run_stream(dit, cfg, ref, 8, talk, listen)
    base, slots = reference_forward(dit, cfg, ref, traces, talk, listen)
    last = [a for a, s in enumerate(slots) if s[3] == (8, ("q", 2))]
    for frame, should_change in ((5, False), (20, True), (2, True)):  # evicted, window, sink
        poked = [dataclasses.replace(tr) for tr in traces]
        chunk = (frame - 1) // 3
        x = poked[chunk].cache_input.clone()
        x[:, :, (frame - 1) % 3] += 1.0
        poked[chunk].cache_input = x
        out, _ = reference_forward(dit, cfg, ref, poked, talk, listen)
        changed = (out[:, :, last] - base[:, :, last]).abs().max().item() > 1e-4
        assert changed == should_change, frame


def test_positions_from_the_fifth_chunk_are_contiguous(dit):
    ref = torch.zeros(1, CFG.in_dim, 1, 2, 2)
    gen = StreamingGenerator(dit, StreamConfig(), keep_trace=True)
    gen.start(ref)
    for i in range(1, 9):
        gen.next_chunk()
        if i >= 5:
            assert gen.trace.key_positions == list(range(13)), i  # [0..3 | 4..9 | 10..12]
    # the 8th chunk (frames 22..24) sees the reference, the first chunk and frames 16..21
    assert gen.trace.key_frames == [0, 1, 2, 3, *range(16, 22), 22, 23, 24]


def test_cache_memory_is_constant_and_never_reallocated():
    cfg = dataclasses.replace(CFG, num_layers=1)
    torch.manual_seed(0)
    gen = StreamingGenerator(WanDiT(cfg).eval(), StreamConfig(steps=1))
    gen.start(torch.zeros(1, CFG.in_dim, 1, 2, 2))
    sizes, pointers = {}, {}
    for i in range(1, 501):
        gen.next_chunk()
        if i in (5, 500):
            sizes[i] = gen.cache.nbytes
            pointers[i] = (gen.cache.k.data_ptr(), gen.cache.v.data_ptr())
    assert sizes[5] == sizes[500]
    assert pointers[5] == pointers[500]
    # sink (4 frames) + window (6) x 1 token x heads x head_dim x 1 layer x (K and V) x 4 bytes
    assert sizes[5] == 10 * 1 * cfg.num_heads * cfg.head_dim * 1 * 2 * 4


def test_same_seed_same_output_and_restart_reuses_the_cache(dit):
    ref = torch.randn(1, CFG.in_dim, 1, 2, 4, generator=torch.Generator().manual_seed(9))
    talk = audio_windows(4, 5)

    def stream(seed):
        gen = StreamingGenerator(dit, StreamConfig(seed=seed))
        gen.start(ref)
        return gen, torch.cat([gen.next_chunk(a) for a in talk], dim=2)

    gen, first = stream(1)
    _, again = stream(1)
    _, other = stream(2)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    cache = gen.cache
    gen.start(ref)  # a new job on the same generator: same cache object, same result
    assert gen.cache is cache
    assert torch.equal(torch.cat([gen.next_chunk(a) for a in talk], dim=2), first)


@pytest.mark.parametrize("rapr", [True, False], ids=["rapr", "vanilla"])
def test_a_thousand_chunks_run_without_position_errors(rapr):
    cfg = dataclasses.replace(CFG, num_layers=1)
    torch.manual_seed(0)
    model = WanDiT(cfg).eval()
    gen = StreamingGenerator(model, StreamConfig(rapr=rapr, steps=1, timesteps=(1000.0,)))
    gen.start(torch.zeros(1, cfg.in_dim, 1, 2, 2))
    for _ in range(1000):
        out = gen.next_chunk()
    assert out.isfinite().all()
    assert gen.chunks_done == 1000  # vanilla RoPE reached latent position 3000 > 1024


def test_small_max_distance_warns():
    cfg = StreamConfig(rapr_max_distance=6)
    gen = StreamingGenerator(WanDiT(CFG), cfg)
    assert gen.warning and "--max-distance" in gen.warning


def test_pure_rules_match_the_paper_layout():
    cfg = StreamConfig()
    assert chunk_start(1, 3) == 1 and chunk_start(5, 3) == 13
    ctx = chunk_context(5, cfg)
    assert (ctx.sink, ctx.window, ctx.current) == ((0, 1, 2, 3), tuple(range(7, 13)), (13, 14, 15))
    assert rope_positions(ctx.frames, 13, cfg) == list(range(13))
    assert rope_positions(ctx.frames, 13, dataclasses.replace(cfg, rapr=False)) == list(ctx.frames)
    no_sink = chunk_context(2, dataclasses.replace(cfg, sink=False))
    assert no_sink.sink == () and no_sink.window == (0, 1, 2, 3)


def test_talk_guidance_combines_two_passes_and_caches_only_the_conditional_one(dit):
    """g != 1: v = v(talk zeroed) + g (v(talk) - v(talk zeroed)) at every step, while the cache
    holds what the plain conditional stream writes. With one step per chunk the cache input is
    the chunk's noise, the same for every g, so the guided and plain caches must stay equal."""
    ref = torch.randn(1, CFG.in_dim, 1, 2, 4, generator=torch.Generator().manual_seed(9))
    talk, listen = audio_windows(3, 5), audio_windows(3, 6)
    silent = [torch.zeros_like(a) for a in talk]
    one_step = StreamConfig(steps=1, seed=3)
    g = 2.5
    guided, g_traces, g_out = run_stream(
        dit, one_step.replace(talk_guidance=g), ref, 3, talk, listen
    )
    plain, p_traces, p_out = run_stream(dit, one_step, ref, 3, talk, listen)
    _, s_traces, _ = run_stream(dit, one_step, ref, 3, silent, listen)
    assert torch.equal(guided.cache.k, plain.cache.k) and torch.equal(guided.cache.v, plain.cache.v)
    v1, v0 = p_traces[0].step_outputs[0], s_traces[0].step_outputs[0]
    assert not torch.allclose(v1, v0, atol=1e-3)  # the talk features matter in this DiT
    torch.testing.assert_close(g_traces[0].step_outputs[0], v0 + g * (v1 - v0), rtol=0, atol=1e-5)
    assert all(not torch.allclose(a, b, atol=1e-3) for a, b in zip(g_out, p_out, strict=True))
    _, _, unit_out = run_stream(dit, one_step.replace(talk_guidance=1.0), ref, 3, talk, listen)
    assert all(torch.equal(a, b) for a, b in zip(unit_out, p_out, strict=True))

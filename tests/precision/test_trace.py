import math

import pytest
import torch

from newbie.errors import NewbieError
from newbie.model.dit import Attention
from newbie.precision.trace import (
    FP16_MAX,
    Tracer,
    attention_logit_stats,
    summarize,
    trace_generation,
    tracing,
)

GEN = dict(seed=3, steps=3, width=64, height=64)


def _all_hooks(pipe) -> int:
    """Hooks the tracer installed (transformers installs output-capturing hooks of its own; those stay)."""
    models = (pipe.dit, pipe.text.gemma, pipe.text.jina)
    hooks = [
        h
        for model in models
        for m in model.modules()
        for h in [*m._forward_hooks.values(), *m._forward_pre_hooks.values()]
    ]
    return sum(h.__qualname__.startswith("Tracer.") for h in hooks)


@pytest.fixture(scope="module")
def traced(tiny_pipeline):
    gen, stats = trace_generation(tiny_pipeline, "1girl, red_hair", {1, 3}, text_encoders=True, **GEN)
    return gen, {(s.step, s.name): s for s in stats}


def test_summarize_counts_nan_inf_and_fp16_overflow():
    s = summarize(torch.tensor([1.0, -2.0, math.inf, math.nan, 70000.0]))
    count, finite, mn, mx, absmax, sumsq, over, nan = s
    assert (count, finite, mn, mx, absmax, nan) == (5, 3, -2.0, 70000.0, 70000.0, 1)
    assert over == 2  # 70000 and inf; NaN is not "beyond the range"
    assert sumsq == pytest.approx(1 + 4 + 70000.0**2)


def test_traced_shapes_match_the_model(traced, tiny_pipeline):
    _, by = traced
    cfg = tiny_pipeline.dit.cfg
    tokens = (64 // 8 // cfg.patch_size) ** 2

    def dims(name):  # the batch is 2 (CFG pair in one forward) or 1 (split CFG): leave it out
        return {s.split("x", 1)[1] for s in by[(1, name)].shapes}

    assert dims("x_embedder") == {f"{tokens}x{cfg.dim}"}
    assert dims("dit") == {f"{cfg.in_channels}x8x8"}
    assert all(d.endswith(f"x{cfg.ffn_hidden}") for d in dims("layers.0.feed_forward.w1"))
    joints = {int(d.split("x")[0]) for d in dims("layers.0")}
    assert dims("layers.0.attention.logits") == {f"{cfg.n_heads}x{j}x{j}" for j in joints}
    names = {name for _, name in by}
    for i in range(cfg.n_layers):
        assert f"layers.{i}.attention.logits" in names and f"layers.{i}.feed_forward" in names
    assert any(name.startswith("gemma.") for name in names) and any(
        name.startswith("jina.") for name in names
    )


def test_only_chosen_steps_are_recorded(traced):
    _, by = traced
    assert {step for step, _ in by} == {0, 1, 3}  # 0: the text encoders
    assert all(s.calls >= 1 and s.count > 0 for s in by.values())


def test_hooks_are_removed_and_the_output_is_unchanged(tiny_pipeline, traced):
    gen, _ = traced
    assert _all_hooks(tiny_pipeline) == 0 and "denoise" not in vars(tiny_pipeline)
    plain = tiny_pipeline.generate("1girl, red_hair", **GEN)
    assert torch.equal(plain.latents, gen.latents)


def test_hooks_are_removed_when_generation_fails(tiny_pipeline):
    with pytest.raises(RuntimeError, match="boom"):
        with tracing(tiny_pipeline, {1}) as tracer:
            assert len(tracer._handles) > 0 and _all_hooks(tiny_pipeline) > 0
            raise RuntimeError("boom")
    assert _all_hooks(tiny_pipeline) == 0


def test_steps_outside_the_run_are_an_error(tiny_pipeline):
    with pytest.raises(NewbieError, match="outside 1..3"):
        trace_generation(tiny_pipeline, "1girl", {0, 4}, **GEN)


def test_attention_logit_stats_equal_the_explicit_product():
    from newbie.demo.tiny import tiny_dit_config
    from newbie.model.dit import NextDiT

    torch.manual_seed(0)
    cfg = tiny_dit_config()
    dit = NextDiT(cfg)
    attn: Attention = dit.layers[0].attention
    x = torch.randn(2, 10, cfg.dim)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 7:] = False
    rope = dit.rope(torch.tensor([10, 10]), 0, 2, 5)
    from newbie.model.math import apply_rope

    kv = cfg.n_kv_heads * cfg.head_dim
    q, k, _ = attn.qkv(x).split([cfg.n_heads * cfg.head_dim, kv, kv], dim=-1)
    q = apply_rope(attn.q_norm(q.unflatten(-1, (cfg.n_heads, cfg.head_dim))), rope.cos, rope.sin).transpose(
        1, 2
    )
    k = apply_rope(
        attn.k_norm(k.unflatten(-1, (cfg.n_kv_heads, cfg.head_dim))), rope.cos, rope.sin
    ).transpose(1, 2)
    k = k.repeat_interleave(cfg.n_heads // cfg.n_kv_heads, dim=1)
    logits = q @ k.transpose(-1, -2) / math.sqrt(cfg.head_dim)  # (B, H, N, N)
    kept = logits.masked_select(mask[:, None, None, :].expand_as(logits))
    with torch.no_grad():
        whole = attention_logit_stats(attn, x, rope, mask)
        chunked = attention_logit_stats(attn, x, rope, mask, chunk_elements=2 * cfg.n_heads * 10 * 3)
    assert whole[0] == kept.numel()
    kept = kept.detach()
    assert whole[4] == pytest.approx(float(kept.abs().max()), rel=1e-5)
    assert whole[2] == pytest.approx(float(kept.min()), rel=1e-5)
    assert whole[5] == pytest.approx(float(kept.double().square().sum()), rel=1e-5)
    assert chunked == pytest.approx(whole, rel=1e-6)


def test_fp16_overflow_shows_as_inf_beyond_the_range():
    lin = torch.nn.Linear(4, 4).half()
    with torch.no_grad():
        lin.weight.fill_(30000.0)
    model = torch.nn.Sequential(lin)
    tracer = Tracer({1})
    tracer.attach(model)
    model(torch.ones(1, 4, dtype=torch.float16))
    tracer.remove()
    st = {s.name: s for s in tracer.rows()}["0"]
    assert st.inf == 4 and st.frac_over_fp16 == 1.0 and st.dtype == "float16"
    assert st.as_row()["absmax"] is None  # no finite value left
    assert all(len(m._forward_hooks) == 0 for m in model.modules())
    assert FP16_MAX == float(torch.finfo(torch.float16).max)


def test_a_new_sampling_pass_restarts_the_step_count():
    class Fake(torch.nn.Module):
        def forward(self, x, t):
            return x * t

    model, tracer = Fake(), Tracer({1, 2})
    tracer.attach(model)
    callback = tracer.progress()
    x = torch.ones(2)
    for done in (1, 2, 1):  # two steps, then sampling starts over (as the fp16 guard does)
        if done == 1:
            tracer.new_pass()
        model(x, torch.tensor([0.5]))
        callback({"step": done})
    tracer.remove()
    assert [(s.run, s.step) for s in tracer.rows()] == [(1, 1), (1, 2), (2, 1)]


def test_trace_shows_the_fp16_overflow_the_guard_recovers_from(tiny_model_dir):
    import newbie

    pipe = newbie.load(tiny_model_dir, device="cpu", dtype="fp16", text_dtype="fp32")
    with torch.no_grad():  # an FFN that overflows fp16 on any input
        pipe.dit.layers[0].feed_forward.w2.weight.mul_(1e4)
        pipe.dit.layers[0].feed_forward.w1.weight.mul_(1e2)
    gen, stats = trace_generation(
        pipe,
        "1girl",
        {1},
        match=r"^layers\.0\.feed_forward$",
        logits=False,
        seed=1,
        steps=2,
        width=32,
        height=32,
        sampler="euler",
    )
    first = next(s for s in stats if (s.run, s.step) == (1, 1))
    assert first.inf > 0 and first.frac_over_fp16 > 0 and first.dtype == "float16"
    if getattr(gen, "guard_events", None):  # the guard re-ran sampling: a second pass, kept apart
        assert max(s.run for s in stats) > 1

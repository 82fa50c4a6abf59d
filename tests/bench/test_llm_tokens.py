"""The speed bench's Gemma section on the CPU: each decoder kind's tokens per second, the best one picked, each
kind under its own cap, and the bandwidth bound."""

import statistics
import time

import pytest
import torch

from newbie.bench import llm_tokens
from newbie.bench.llm_tokens import decode_speed, kernel_table, llm_section, weight_bytes
from newbie.bench.time_limit import time_limit


def test_decode_speed_counts_new_tokens(tiny_pipeline):
    gemma = tiny_pipeline.text.gemma
    out = decode_speed(gemma, "cpu", prompt_tokens=12, new_tokens=5, repeats=2)
    assert out["decoder"] == "StaticDecoder" and not out["cuda_graph"]  # make_decoder's choice on the CPU
    assert out["kind"] == "auto" and not out["compiled"] and out["graph_error"] == ""
    assert out["new_tokens"] == 5 and len(out["tokens_per_s_runs"]) == 2
    assert out["tokens_per_s"] == statistics.median(out["tokens_per_s_runs"])  # the warm-up left out
    assert out["tokens_per_s"] > 0 and out["prefill_s"] > 0


def test_section_measures_every_kind_and_reports_the_best(tiny_pipeline):
    gemma = tiny_pipeline.text.gemma
    assert weight_bytes(gemma) == sum(p.numel() * p.element_size() for p in gemma.parameters())
    res = {}
    llm_section(res, gemma, "cpu", new_tokens=4, backend="aot_eager")
    by_kind = res["llm_decode_by_kind"]
    assert list(by_kind) == ["auto", "compiled"]
    for kind, out in by_kind.items():
        assert out["kind"] == kind and out["tokens_per_s"] > 0 and out["setup_s"] > 0
        assert out["graph_error"] == "" and not out["cuda_graph"]  # no graph on the CPU
    assert by_kind["compiled"]["compiled"] and not by_kind["auto"]["compiled"]
    # the compiled step against the plain one, after the same eager prefill
    assert by_kind["compiled"]["max_abs_logit_diff_vs_auto"] < 1e-4
    assert by_kind["compiled"]["same_tokens_as_auto"] == 1.0
    best = max(by_kind, key=lambda k: by_kind[k]["tokens_per_s"])
    d = res["llm_decode"]
    assert res["llm_decoder"] == best and res["llm_tokens_per_s"] == by_kind[best]["tokens_per_s"]
    assert d["kind"] == best and d["tokens_per_s"] == res["llm_tokens_per_s"]
    assert d["weight_gb"] == weight_bytes(gemma) / 1e9
    assert (
        abs(d["bound_tokens_per_s"] - d["copy_bandwidth_tb_s"] * 1e3 / d["weight_gb"])
        < 1e-6 * d["bound_tokens_per_s"]
    )
    assert d["pct_of_bound"] == pytest.approx(100 * d["tokens_per_s"] / d["bound_tokens_per_s"])
    assert d["profile"].startswith("not run")  # the kernel profile is CUDA's
    assert torch.is_grad_enabled()  # the section leaves autograd as it found it


def _slow_auto(monkeypatch):
    real = llm_tokens._decode

    def decode(gemma, device, prompt_tokens, new_tokens, repeats, kind, backend):
        if kind == "auto":
            time.sleep(30)  # as a compile that would eat the GPU call
        return real(gemma, device, 12, new_tokens, 1, kind, backend)

    monkeypatch.setattr(llm_tokens, "_decode", decode)


def test_a_kind_past_its_cap_is_recorded_and_the_next_one_measured(tiny_pipeline, monkeypatch):
    _slow_auto(monkeypatch)
    res = {}
    t = time.perf_counter()
    llm_section(res, tiny_pipeline.text.gemma, "cpu", 3, ("auto", "eager"), caps_s={"auto": 0.3})
    assert time.perf_counter() - t < 20
    assert "the auto decoder's cap" in res["llm_decode_by_kind"]["auto"]["error"]
    assert res["llm_decoder"] == "eager" and res["llm_tokens_per_s"] > 0


def test_the_sections_own_limit_still_ends_the_section(tiny_pipeline, monkeypatch):
    _slow_auto(monkeypatch)
    res = {}
    with pytest.raises(TimeoutError, match="section limit"):
        with time_limit(0.3, message="section limit"):  # sooner than the kind's cap: it stays in charge
            llm_section(res, tiny_pipeline.text.gemma, "cpu", 3, ("auto", "eager"))
    assert "eager" not in res["llm_decode_by_kind"] and "llm_tokens_per_s" not in res


def test_failed_kinds_are_recorded_and_no_kind_at_all_is_an_error(tiny_pipeline):
    res = {}
    with pytest.raises(RuntimeError, match="no Gemma decoder ran: fast: NewbieError: unknown decoder 'fast'"):
        llm_section(res, tiny_pipeline.text.gemma, "cpu", 3, ("fast",))
    assert "unknown decoder" in res["llm_decode_by_kind"]["fast"]["error"]
    llm_section(res, tiny_pipeline.text.gemma, "cpu", 3, ("fast", "eager"))
    assert res["llm_decoder"] == "eager" and "error" in res["llm_decode_by_kind"]["fast"]


def test_kernel_table_sums_by_name_and_keeps_the_top():
    kernels = [
        ("gemv", 10.0),
        ("norm" + "x" * 100, 1.0),
        ("gemv", 12.5),
        ("rope", 3.0),
        ("norm" + "x" * 100, 1.5),
    ]
    rows = kernel_table(kernels, top=2)
    assert rows == [
        {"name": "gemv", "count": 2, "total_us": 22.5},
        {"name": "rope", "count": 1, "total_us": 3.0},
    ]
    assert kernel_table(kernels)[-1] == {"name": ("norm" + "x" * 100)[:80], "count": 2, "total_us": 2.5}


def test_profile_step_counts_one_steps_work(tiny_pipeline):
    # on the CPU its outermost aten ops (on CUDA the kernels): the counting and the table, end to end
    gemma = tiny_pipeline.text.gemma
    out = llm_tokens.profile_step(gemma, "cpu", "eager", prompt_tokens=8, new_tokens=4, top=100)
    n_layers = len(gemma.layers)
    assert (
        out["kernels_per_token"] > 10 * n_layers
    )  # norms, projections, rope, cache writes, attention per layer
    top = out["top"]
    assert 0 < len(top) <= 100 and [r["total_us"] for r in top] == sorted(
        (r["total_us"] for r in top), reverse=True
    )
    # every op is in a table this long: a step's attention is the plain math (model.gemma.attend_one)
    names = {r["name"] for r in top}
    assert {"aten::linear", "aten::softmax", "aten::where"} <= names
    assert "aten::scaled_dot_product_attention" not in names
    assert sum(r["count"] for r in top) <= out["kernels_per_token"]

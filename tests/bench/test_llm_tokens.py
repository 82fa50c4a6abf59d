"""The speed bench's Gemma section on the CPU: make_decoder's tokens per second and the bandwidth bound."""

import statistics

import torch

from newbie.bench.llm_tokens import decode_speed, llm_section, weight_bytes


def test_decode_speed_counts_new_tokens(tiny_pipeline):
    gemma = tiny_pipeline.text.gemma
    out = decode_speed(gemma, "cpu", prompt_tokens=12, new_tokens=5, repeats=2)
    assert out["decoder"] == "StaticDecoder" and not out["cuda_graph"]  # make_decoder's choice on the CPU
    assert out["new_tokens"] == 5 and len(out["tokens_per_s_runs"]) == 2
    assert out["tokens_per_s"] == statistics.median(out["tokens_per_s_runs"])  # the warm-up left out
    assert out["tokens_per_s"] > 0 and out["prefill_s"] > 0


def test_section_writes_the_speed_and_its_bound(tiny_pipeline):
    gemma = tiny_pipeline.text.gemma
    assert weight_bytes(gemma) == sum(p.numel() * p.element_size() for p in gemma.parameters())
    res = {}
    llm_section(res, gemma, "cpu", new_tokens=4)
    d = res["llm_decode"]
    assert res["llm_tokens_per_s"] == d["tokens_per_s"] > 0
    assert d["weight_gb"] == weight_bytes(gemma) / 1e9
    assert (
        abs(d["bound_tokens_per_s"] - d["copy_bandwidth_tb_s"] * 1e3 / d["weight_gb"])
        < 1e-6 * d["bound_tokens_per_s"]
    )
    assert d["pct_of_bound"] > 0
    assert torch.is_grad_enabled()  # the section leaves autograd as it found it

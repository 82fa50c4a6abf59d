"""bench/decode_attention.py on the CPU (small cache, no graph, compiled with aot_eager): every variant runs
and is as close to fp32 as SDPA's own bf16 result; without CUDA the timed run refuses in one line."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "decode_attention.py"


def _script():
    if "bench_decode_attention" not in sys.modules:  # a script, not a package: import it by path
        spec = importlib.util.spec_from_file_location("bench_decode_attention", SCRIPT)
        sys.modules["bench_decode_attention"] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules["bench_decode_attention"]


def test_every_variant_runs_and_the_math_is_as_close_to_fp32_as_sdpa(tmp_path):
    out = tmp_path / "att.json"
    assert _script().main(["--cpu", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    got = res["variants"]
    assert set(got) == {f"{n}{c}" for n in ("sdpa", "math", "mm") for c in ("", "_compiled")}
    assert all(v["us_per_call"] is None for v in got.values())  # not timed on the CPU
    assert res["kv_bytes_per_layer"] == 2 * 33 * 4 * 256 * 2
    for name in ("math", "math_compiled", "mm", "mm_compiled"):
        assert 0 < got[name]["max_abs_diff_vs_fp32"] <= got["sdpa"]["max_abs_diff_vs_fp32"] * 1.5


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for a machine without CUDA")
def test_without_cuda_the_timed_run_refuses_in_one_line(capsys):
    assert _script().main([]) == 2
    assert capsys.readouterr().err.strip() == "error: no CUDA device (use --cpu to check the script)"

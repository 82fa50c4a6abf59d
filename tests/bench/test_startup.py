"""`newbie bench startup` at demo size on the CPU, the import laziness it measures, and the fast writer of the
random full-size checkpoint its GPU run loads."""

import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

from newbie.bench.random_checkpoint import stream_save
from newbie.bench.startup_child import IMPORT_PROBE

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__import__("newbie").__file__)))


def _python(*argv, **kw):
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, timeout=300, **kw)


def test_import_newbie_prints_nothing_and_imports_no_model_library():
    p = _python(
        "-c", "import sys, newbie; print(sorted(set(sys.modules) & {'transformers', 'diffusers', 'torchao'}))"
    )
    assert p.returncode == 0 and p.stdout == "[]\n" and p.stderr == ""


def test_cli_parsing_up_to_the_load_stays_light(tiny_model_dir):
    p = _python("-c", IMPORT_PROBE, "generate", "a cat", "--model", str(tiny_model_dir), "--compile")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("@@")  # nothing printed but the probe's own line
    data = json.loads(lines[0][2:])
    assert data["heavy_modules"] == []
    assert data["import_s"] < 5


def test_bench_startup_runs_end_to_end_on_cpu(tiny_model_dir, tmp_path):
    sections = "read,import,load,cli,compile,vram,megacache"
    p = _python(
        "-m", "newbie", "bench", "startup", "--model", str(tiny_model_dir), "--device", "cpu",
        "--size", "64", "--sections", sections, "--out", str(tmp_path),
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    (path,) = tmp_path.glob("startup-cpu-*.json")
    res = json.loads(path.read_text())
    assert res["device"] == "cpu" and res["weights_gb"] > 0 and res["page_cache_read_s"] > 0
    assert res["import_heavy_modules"] == [] and 0 < res["import_s"] < res["load_s"]
    assert res["first_encode_s"] > 0 and res["first_step_s"] > 0 and res["later_step_s"] > 0
    assert len(res["load_detail"]["step_s"]) == 4 and res["load_detail"]["second_load_s"] > 0
    assert res["warm_s"] > 0 and res["first_encode_warmed_s"] > 0 and res["first_step_warmed_s"] > 0
    for key in ("cli_compiled_cold_s", "cli_compiled_warm_s", "cli_compiled_warm_megacache_s", "cli_vram8_s"):
        assert "CUDA" in res[key]  # the reason it could not run here, not a number
    assert set(res["section_s"]) == set(sections.split(","))
    # the command's own account of its time, read back from its output
    phases = res["cli_eager_phases"]
    assert isinstance(res["cli_eager_s"], float) and phases["load_s"] > 0 and phases["denoise_s"] > 0
    assert phases["setup_s"] + phases["load_s"] <= phases["total_s"] <= res["cli_eager_s"]


def test_bench_startup_refuses_bad_input_in_one_line(tmp_path):
    p = _python("-m", "newbie", "bench", "startup", "--sections", "load,warp", "--out", str(tmp_path))
    assert p.returncode == 2 and "warp" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = _python("-m", "newbie", "bench", "startup", "--model", str(tmp_path / "none"), "--out", str(tmp_path))
    assert p.returncode == 2 and "not a model folder" in p.stderr
    assert not list(tmp_path.glob("*.json"))


def test_stream_save_writes_what_safetensors_reads(tmp_path):
    sd = {
        "w": torch.randn(3, 5).bfloat16(),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
        "mask": torch.tensor([True, False]),
        "strided": torch.arange(7)[::2],  # not contiguous
        "half": torch.randn(2, 2, 2).half(),
    }
    stream_save(sd, tmp_path / "x.safetensors", {"format": "pt"})
    got = load_file(str(tmp_path / "x.safetensors"))
    assert got.keys() == sd.keys()
    for k, v in sd.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v), k


def test_the_streamed_checkpoint_loads_as_save_models_does(tmp_path):
    import newbie
    from newbie.bench.random_checkpoint import save_components
    from newbie.demo.tiny import tiny_components
    from newbie.loading.writer import save_model

    parts = tiny_components(seed=1)
    save_model(tmp_path / "ref", *parts)
    save_components(tmp_path / "fast", *parts)
    ref = newbie.load(tmp_path / "ref", device="cpu", dtype="fp32")
    fast = newbie.load(tmp_path / "fast", device="cpu", dtype="fp32")
    for a, b in ((ref.dit, fast.dit), (ref.text.gemma, fast.text.gemma), (ref.text.jina, fast.text.jina)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert (tmp_path / "fast" / "clip_model" / "tokenizer.json").is_file()

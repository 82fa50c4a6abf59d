"""bench/matrix.py on the demo model (CPU): every workflow under the staged, streamed and int8 plans.

The plans are the ones a GPU user gets at each budget, scaled to the demo's depth; on the CPU the residency
still swaps weights per stage and guards them (memory/offload.py), so a workflow that runs a model outside
its stage (issue 13: the init image VAE-encoded inside the denoise stage) fails here as it does on a GPU."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

MATRIX = Path(__file__).resolve().parents[2] / "bench" / "matrix.py"


def _matrix():
    if (
        "bench_matrix" not in sys.modules
    ):  # a script, not a package: import it by path (dataclasses need it listed)
        spec = importlib.util.spec_from_file_location("bench_matrix", MATRIX)
        sys.modules["bench_matrix"] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules["bench_matrix"]


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_every_workflow_under_every_small_plan(tmp_path, one_thread):
    matrix = _matrix()
    plans = ["12GB", "8GB", "4GB"]
    try:
        import torchao  # noqa: F401

        plans.append("6GB")  # int8 weights
    except ImportError:
        pass
    workflows = [w for w in matrix.WORKFLOWS if w != "compile"] + ["fp16_overflow"]
    out = tmp_path / "matrix.json"
    res = matrix.main(
        [
            "--device",
            "cpu",
            "--demo",
            "--demo-size",
            "32",
            "--steps",
            "1",
            "--out",
            str(out),
            "--plans",
            ",".join(plans),
            "--workflows",
            ",".join(workflows),
        ]
    )
    assert json.loads(out.read_text())["cells"] == res["cells"]  # written as it went
    cells = res["cells"]
    assert len(cells) == len(plans) * len(workflows)  # "wide" is the 48x32 txt2img row
    failed = [(c["workflow"], c["plan"], c["error"], c.get("where")) for c in cells if not c["ok"]]
    assert not failed, failed
    assert all(c["outcome"] == "image" for c in cells)
    # the plans really staged and streamed: the scaled full-size ladder
    applied = {p["plan"]: p for p in res["plans"] if p["dtype"] == "fp32"}
    assert applied["staged"]["staged"] and applied["staged"]["streamers"] == 0
    assert applied["stream-8"]["streamers"] == 2 and applied["stream-all"]["streamers"] == 2
    fp16 = [c for c in cells if c["workflow"] == "fp16_overflow"]
    assert fp16 and all(any("fp16" in e for e in c["events"]) for c in fp16)


def test_a_failing_cell_is_recorded_with_where_it_failed(tmp_path, one_thread, monkeypatch):
    matrix = _matrix()
    from newbie.model.vae import LatentCodec

    def broken(self, image):
        raise ValueError("encoder exploded\nsecond line")

    monkeypatch.setattr(LatentCodec, "encode", broken)
    res = matrix.main(
        [
            "--device",
            "cpu",
            "--demo",
            "--demo-size",
            "32",
            "--steps",
            "1",
            "--out",
            str(tmp_path / "m.json"),
            "--plans",
            "12GB",
            "--workflows",
            "img2img,txt2img",
        ]
    )
    by = {(c["workflow"], c["size"]): c for c in res["cells"]}
    bad, good = by[("img2img", "32x32")], by[("txt2img", "32x32")]
    assert not bad["ok"] and bad["traceback"] and bad["error"] == "ValueError: encoder exploded"
    assert any("test_matrix.py" in w for w in bad["where"])
    assert good["ok"]
    assert res["summary"]["tracebacks"] == 1
    assert "**FAIL** ValueError: encoder exploded" in matrix.table(res)

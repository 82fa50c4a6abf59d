"""bench/train_memory.py at a tiny size on the CPU: the GPU script runs end to end and writes the keys the
benchmark table reads, so it cannot rot between GPU runs."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "train_memory.py"


def test_tiny_run_writes_the_table_keys(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("train_memory", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    result = mod.main(["--tiny", "--steps", "2", "--out-dir", str(tmp_path)])
    files = list(tmp_path.glob("train-cpu-tiny-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text()) == result
    for key in ("s_per_step_1024_r32", "s_per_step_768_r16_12gb"):
        assert result[key] > 0
    for key in ("peak_gib_1024_r32", "peak_gib_768_r16_12gb"):
        assert result[key] is None  # no CUDA: no peak to report, and none is made up
    assert result["cases"]["64_r32"]["loss_finite"] and result["cases"]["32_r16_12gb"]["loss_finite"]
    assert result["cases"]["64_r32"]["lora_params"] == 2 * result["cases"]["32_r16_12gb"]["lora_params"]

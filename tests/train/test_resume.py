"""A run killed with SIGKILL after a checkpoint and then resumed ends with the same LoRA, bit for bit, as an
uninterrupted run with the same seed (CPU)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from safetensors.torch import load_file

from newbie.cli.main import main
from newbie.train.checkpoint import path_for
from tests.train.standing import build_dataset

SRC = str(Path(__file__).resolve().parents[2] / "src")


def args(data, out, model, *extra):
    return [
        "train", "lora", str(data), "--out", str(out), "--model", str(model), "--device", "cpu",
        "--resolution", "64", "--steps", "30", "--save-every", "2", "--batch", "2", "--rank", "2",
        "--lr", "1e-3", "--save-dtype", "fp32", "--seed", "7", "--quiet", *extra,
    ]  # fmt: skip


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, tiny_model_dir):
    data = tmp_path / "data"
    build_dataset(data, 6)
    whole, broken = tmp_path / "whole" / "a.safetensors", tmp_path / "broken" / "a.safetensors"
    assert main(args(data, whole, tiny_model_dir)) == 0

    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "newbie", *args(data, broken, tiny_model_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state = path_for(broken)
    deadline = time.monotonic() + 120
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists() and not broken.exists()  # killed mid-run, after a checkpoint

    assert main(args(data, broken, tiny_model_dir)) == 2  # a checkpoint is never overwritten silently
    assert main(args(data, broken, tiny_model_dir, "--resume")) == 0
    a, b = load_file(whole), load_file(broken)
    assert a.keys() == b.keys()
    assert all(a[k].equal(b[k]) for k in a)
    assert any(v.abs().sum() > 0 for k, v in a.items() if k.endswith("lora_B.weight"))  # it did train


def test_samples_and_loss_curve_while_training(tmp_path):
    data = tmp_path / "data"
    build_dataset(data, 2)
    out = tmp_path / "s.safetensors"
    argv = ["train", "lora", str(data), "--out", str(out), "--device", "cpu", "--quiet", "--steps", "2"]
    assert main(argv + ["--sample-every", "1", "--sample-seeds", "5", "--rank", "2"]) == 0
    names = sorted(p.name for p in (tmp_path / "s-samples").iterdir())
    assert names == ["step000001-p0-seed5.png", "step000002-p0-seed5.png"]
    assert (tmp_path / "s-loss.png").is_file() and (tmp_path / "s.state.pt").is_file()

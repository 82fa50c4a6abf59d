"""Importing and loading print nothing but our own lines: torchao (which transformers and diffusers import when
installed, printing "Failed to load ..._C_mxfp8.so" and torch _pytree warnings) is imported only to quantize."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _run(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_load_and_the_diffusers_front_end_print_nothing_and_leave_torchao_alone():
    pytest.importorskip("torchao")  # the noise comes from it; without it there is nothing to hide
    done = _run(
        "import sys, torch, newbie\n"
        "pipe = newbie.load(device='cpu')\n"
        "newbie.NewbiePipeline.from_pretrained(torch_dtype=torch.float32)\n"
        "print('torchao' in sys.modules)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "False\n" and done.stderr == ""


def test_quantizing_still_imports_torchao_quietly():
    pytest.importorskip("torchao")
    done = _run(
        "import sys\n"
        "from newbie.quiet_imports import import_model_libraries\n"
        "import_model_libraries()\n"
        "from newbie.memory.quant import _torchao\n"
        "_torchao()\n"
        "print('torchao' in sys.modules)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "True\n" and "_pytree" not in done.stderr


def test_the_tiny_checkpoints_build_quietly():
    """demo/tiny draws the tiny Jina's weights with transformers (the seeded draws the test checkpoints and the
    demo model came from): that import must not bring torchao's noise with it."""
    pytest.importorskip("torchao")
    done = _run("from newbie.demo.tiny import tiny_components\ntiny_components(0)\n")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""

"""int8 weight quantization (newbie.memory.quant) on the tiny checkpoint."""

import sys

import pytest

import newbie

PROMPT = "1girl, red_hair, left, white_background"


@pytest.mark.parametrize("mode", ["int8", "fp8-dynamic"])
def test_quantized_weights_generate_close_to_the_plain_model(tiny_model_dir, monkeypatch, mode):
    if mode == "int8":
        pytest.importorskip("torchao")
    else:
        monkeypatch.setitem(sys.modules, "torchao", None)  # the native fp8 path must not need it
    ref = newbie.load(tiny_model_dir, device="cpu", dtype="bf16").generate(
        PROMPT, seed=3, steps=2, width=32, height=32
    )
    q = newbie.load(tiny_model_dir, device="cpu", dtype="bf16", quantize=mode)
    gen = q.generate(PROMPT, seed=3, steps=2, width=32, height=32)
    assert gen.recipes[0].dtype == f"bf16+{mode}"
    rel = ((gen.latents - ref.latents).norm() / ref.latents.norm()).item()
    assert 0 < rel < 0.2, rel

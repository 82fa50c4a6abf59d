"""int8 weight quantization (newbie.memory.quant) on the tiny checkpoint."""

import newbie

PROMPT = "1girl, red_hair, left, white_background"


def test_int8_weights_generate_close_to_the_plain_model(tiny_model_dir):
    ref = newbie.load(tiny_model_dir, device="cpu", dtype="bf16").generate(
        PROMPT, seed=3, steps=2, width=32, height=32
    )
    q = newbie.load(tiny_model_dir, device="cpu", dtype="bf16", quantize="int8")
    gen = q.generate(PROMPT, seed=3, steps=2, width=32, height=32)
    assert gen.recipes[0].dtype == "bf16+int8"
    rel = ((gen.latents - ref.latents).norm() / ref.latents.norm()).item()
    assert 0 < rel < 0.2, rel


def test_fp8_dynamic_generates_close_to_the_plain_model_without_torchao(tiny_model_dir, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torchao", None)  # the native fp8 path must not need it
    ref = newbie.load(tiny_model_dir, device="cpu", dtype="bf16").generate(
        PROMPT, seed=3, steps=2, width=32, height=32
    )
    q = newbie.load(tiny_model_dir, device="cpu", dtype="bf16", quantize="fp8-dynamic")
    gen = q.generate(PROMPT, seed=3, steps=2, width=32, height=32)
    assert gen.recipes[0].dtype == "bf16+fp8-dynamic"
    rel = ((gen.latents - ref.latents).norm() / ref.latents.norm()).item()
    assert 0 < rel < 0.2, rel

"""The fp16 guard (newbie.precision.guard) on the tiny checkpoint."""

import torch

import newbie

PROMPT = "1girl, red_hair, left, white_background"


def test_fp16_overflow_is_detected_and_recovered(tiny_model_dir):
    pipe = newbie.load(tiny_model_dir, device="cpu", dtype="fp16", text_dtype="fp32")
    with torch.no_grad():  # an FFN that overflows fp16 on any input
        pipe.dit.layers[0].feed_forward.w2.weight.mul_(1e4)
        pipe.dit.layers[0].feed_forward.w1.weight.mul_(1e2)
    gen = pipe.generate(PROMPT, seed=1, steps=2, width=32, height=32, sampler="euler")
    assert gen.guard_events, "the guard did not report anything"
    assert any("fp16" in e for e in gen.guard_events)
    assert torch.isfinite(gen.latents).all()
    assert all(e in gen.recipes[0].warnings for e in gen.guard_events)  # never saved silently

"""Where features meet: the fp16 guard under a staged memory plan, the VAE at batch > 1."""

import torch

import newbie
from newbie.memory.planner import Plan


def test_fp16_fallback_under_a_staged_plan_converts_the_plans_copies(tiny_model_dir):
    pipe = newbie.load(tiny_model_dir, device="cpu", dtype="fp16", text_dtype="fp32")
    with torch.no_grad():
        for p in pipe.dit.final_layer.parameters():
            p.mul_(1e5)  # an overflow the activation clamp cannot absorb: the guard must fall back to fp32
    pipe.apply_plan(Plan("staged", residency="staged"))
    warnings = []
    for _ in range(2):  # the second run must start in the safe dtype, from the plan's own (converted) copies
        gen = pipe.generate("1girl, red_hair", seed=1, steps=2, width=32, height=32, sampler="euler")
        assert torch.isfinite(gen.latents).all()
        assert gen.recipes[0].dtype == "fp32"
        assert not any("NaN" in w for w in gen.recipes[0].warnings)
        warnings.append(gen.recipes[0].warnings)
    assert any("re-ran the DiT in fp32" in w for w in warnings[0])
    assert not any("overflow" in w for w in warnings[1])  # already safe: no second fallback
    assert all(p.dtype == torch.float32 for p in pipe.dit.parameters())


def test_batch_decode_equals_single_image_decode(tiny_pipeline):
    lat = torch.randn(
        2, tiny_pipeline.codec.cfg.latent_channels, 4, 6, generator=torch.Generator().manual_seed(0)
    )
    both = tiny_pipeline.codec.decode(lat)
    assert torch.equal(both[1:], tiny_pipeline.codec.decode(lat[1:]))

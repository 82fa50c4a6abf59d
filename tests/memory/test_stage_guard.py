"""Memory plans on the CPU: staged and streamed plans really stage (weights swapped per stage, exactly),
and a model used outside its stage fails at once with the stage's name, as it fails on a GPU with a device
mismatch."""

import pytest
import torch

import newbie
from newbie.memory.offload import OffloadedUse
from newbie.memory.planner import ComponentSizes, Plan, candidates, plan_for

PROMPT = "1girl, red_hair, left, white_background"


def _plans(pipe) -> dict[str, Plan]:
    return {p.name: p for p in candidates(ComponentSizes.of(pipe))}


def _gen(pipe):
    return pipe.generate(PROMPT, seed=5, steps=2, width=32, height=32, sampler="euler")


@pytest.fixture
def pipe(tiny_model_dir):
    return newbie.load(tiny_model_dir, device="cpu", dtype="fp32")


def test_a_model_used_outside_its_stage_fails_with_the_stage_name(pipe):
    pipe.apply_plan(_plans(pipe)["staged"])
    assert pipe.residency.staged
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(OffloadedUse, match="outside the 'vae' stage"):
        pipe.codec.encode(x)  # what issue 13's img2img did inside the denoise stage
    with pipe.stage("vae"):
        inside = pipe.codec.encode(x)
    with pytest.raises(OffloadedUse, match="outside the 'denoise' stage"):
        _denoise_once(pipe)
    with pipe.stage("denoise"):
        _denoise_once(pipe)
    with pytest.raises(OffloadedUse, match="outside the 'vae' stage"):
        pipe.codec.encode(x)  # offloaded again on the way out
    pipe.apply_plan(Plan("resident"))  # a new plan takes the old guards off
    assert torch.equal(pipe.codec.encode(x), inside)


def _denoise_once(pipe):
    dit = pipe.dit
    with torch.no_grad():
        dit(
            torch.zeros(1, 16, 4, 4),
            torch.zeros(1),
            torch.zeros(1, 3, dit.cfg.cap_feat_dim),
            None,
            torch.zeros(1, dit.cfg.clip_text_dim),
        )


@pytest.mark.parametrize("name", ["staged", "stream-all"])
def test_staged_and_streamed_plans_are_exact_on_the_cpu(pipe, name):
    ref = _gen(pipe)
    pipe.apply_plan(_plans(pipe)[name])
    out = _gen(pipe)
    assert torch.equal(out.latents, ref.latents)
    assert [p.tobytes() for p in out.images] == [p.tobytes() for p in ref.images]


def test_a_plan_made_for_the_full_model_streams_all_of_a_shallower_one(pipe):
    full = plan_for(4, 1024, 1024)  # stream-all of the 36-layer model, the ladder's smallest plan
    assert full.dit_streamed == 36 and full.gemma_streamed == 34
    pipe.apply_plan(full)
    streamed = sorted(len(s.streamed) for s in pipe.residency.streamers)
    assert streamed == sorted([len(pipe.dit.layers), len(pipe.text.gemma.layers)])
    assert torch.isfinite(_gen(pipe).latents).all()


def test_compile_under_a_streamed_plan_keeps_the_streamer_outside_the_graph():
    # compiled blocks run their hooks too; the streamer's are host-side work that dynamo must not trace
    # (traced, they recompiled once per block index: the demo's 8 streamed layers hit the limit of 8 and the
    # fullgraph compile failed, as the full model's 36 would)
    pipe = newbie.load(device="cpu", dtype="fp32")  # the demo model: 8 layers
    torch._dynamo.reset()
    pipe.apply_plan(plan_for(4, 1024, 1024))  # stream-all
    ref = _gen(pipe)
    with torch._dynamo.config.patch(recompile_limit=8):
        pipe.compile(backend="eager")
        out = _gen(pipe)
    torch.testing.assert_close(out.latents, ref.latents, rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()

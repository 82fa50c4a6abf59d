import pytest

from newbie.errors import NewbieError
from newbie.memory.planner import ComponentSizes, parse_vram, plan_for, step_down


@pytest.mark.parametrize(
    "vram, name",
    [(80, "resident"), (24, "resident"), (12, "staged"), (8, "stream-8"), (6, "int8"), (4, "stream-all")],
)
def test_plan_ladder_at_1024(vram, name):
    plan = plan_for(vram, 1024, 1024)
    assert plan.name == name
    assert plan.predicted_peak_gib <= vram * 0.93
    assert plan.describe().startswith(f"plan '{name}'")


def test_streaming_and_tiling_flags():
    assert plan_for(24).bit_identical and plan_for(8).bit_identical
    assert not plan_for(6).bit_identical  # int8 weights
    tiny = plan_for(4)
    assert tiny.vae_tiling and tiny.dit_streamed == 36 and tiny.gemma_embed_on_cpu


def test_bigger_images_need_bigger_plans():
    assert plan_for(24, 1024, 1024).name == "resident"
    assert (
        plan_for(24, 2048, 2048).name == "staged"
    )  # the fp32 decode at 2048^2 no longer fits beside the rest


def test_no_plan_fits_and_step_down():
    with pytest.raises(NewbieError, match="no plan fits 1 GiB"):
        plan_for(1)
    smaller = step_down(plan_for(24), 1024, 1024)
    assert smaller.name == "staged"
    assert step_down(plan_for(4), 1024, 1024) is None


def test_parse_vram():
    assert parse_vram("8GB") == 8 and parse_vram("12") == 12 and parse_vram("7.5 GiB") == 7.5
    for bad in ("eight", "-3", "0"):
        with pytest.raises(NewbieError):
            parse_vram(bad)


def test_sizes_from_a_loaded_pipeline(tiny_pipeline):
    s = ComponentSizes.of(tiny_pipeline)
    assert s.dit_layers == tiny_pipeline.dit.cfg.n_layers
    total = sum(p.numel() * p.element_size() for p in tiny_pipeline.dit.parameters())
    assert s.dit_blocks + s.dit_other == total


def test_a_batch_needs_a_smaller_plan_and_the_plan_remembers_its_budget():
    from newbie.memory.planner import plan_for, rank

    one, two = plan_for(8.0, 1024, 1024), plan_for(8.0, 1024, 1024, batch=2)
    assert one.budget_gib == two.budget_gib == 8.0
    assert two.predicted_peak_gib <= 8.0 * 0.93
    assert rank(two) >= rank(one)
    big = plan_for(8.0, 1024, 1024, batch=4)
    assert rank(big) > rank(one)  # four images' DiT activations do not fit the one-image plan

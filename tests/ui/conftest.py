import pytest

from newbie.pipeline.recipe import Recipe


def make_recipe(**changes) -> Recipe:
    base = dict(
        prompt="1girl, red_hair",
        negative="",
        seed=7,
        steps=3,
        cfg=4.0,
        sampler="euler",
        shift=3.0,
        width=64,
        height=64,
        cfg_trunc=1.0,
        renorm_cfg=0.0,
        dtype="fp32",
        text_dtype="fp32",
        vae_dtype="fp32",
        device="cpu",
        model="tiny",
        model_hash="ab" * 32,
        version="0.1.0",
    )
    return Recipe(**{**base, **changes})


@pytest.fixture
def recipe_factory():
    return make_recipe

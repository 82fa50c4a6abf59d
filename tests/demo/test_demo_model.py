"""End-to-end behaviour of the shipped demo model: prompt -> encoders -> sampler -> DiT -> VAE -> picture."""

from pathlib import Path

import pytest

import newbie
from newbie.demo.evaluate import evaluate, held_out_scenes
from newbie.demo.model import PACKAGED, default_model


@pytest.fixture(scope="module")
def demo():
    return newbie.load(None, device="cpu")


def test_demo_model_is_packaged_small_and_announced(demo):
    size = sum(f.stat().st_size for f in Path(PACKAGED).rglob("*") if f.is_file())
    assert size < 30 * 2**20
    path, notice = default_model()
    assert path == PACKAGED and "toy demo model" in notice and "--model" in notice
    assert demo.spec.sampling.width == 128 and demo.notice == notice


def test_demo_model_binds_hair_colour_to_position_on_held_out_prompts(demo):
    # A CI-sized slice of the model card's measurement (10 held-out scenes x 20 seeds there).
    scenes = held_out_scenes()[::3]
    result = evaluate(demo, scenes, seeds=3, batch=3)
    assert result["hair_accuracy"] >= 0.9, result
    assert result["background_accuracy"] >= 0.95, result

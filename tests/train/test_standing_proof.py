"""The CPU proof of issue 25: a LoRA trained with `newbie train lora` on a small dataset built here teaches the
demo model "standing" (in its vocabulary, never drawn by its world): with the LoRA, prompts that say
"standing" get legs and the same prompts without the word do not; the base model draws none."""

import random

import pytest

import newbie
from newbie.cli.main import main
from tests.train.standing import build_dataset, leg_darkness, single_scene, with_action

STEPS, IMAGES = 150, 24


@pytest.mark.slow
def test_lora_teaches_standing(tmp_path):
    data, out = tmp_path / "data", tmp_path / "standing.safetensors"
    build_dataset(data, IMAGES)
    argv = ["train", "lora", str(data), "--out", str(out), "--device", "cpu", "--quiet"]
    argv += ["--steps", str(STEPS), "--rank", "8", "--lr", "2e-3", "--batch", "4"]
    assert main(argv) == 0
    assert out.with_name("standing-loss.png").is_file()

    pipe = newbie.load(device="cpu")
    rng = random.Random(99)  # held-out figures, one at each position
    scenes = [single_scene(rng, pos) for pos in ("left", "center", "right", "center")]

    def darkness(loras, action):
        return [
            leg_darkness(pipe.generate(with_action(s, action), seed=k, loras=loras).images[0], s)
            for k, s in enumerate(scenes)
        ]

    with_word, without_word = darkness([str(out)], "standing"), darkness([str(out)], "")
    base = darkness([], "standing")
    assert min(with_word) > 0.3, with_word  # legs: the leg boxes are much darker than the background
    assert max(without_word) < 0.15, without_word
    assert max(base) < 0.15, base

"""The CPU proof of issue 25: a LoRA trained with `newbie train lora` on a small dataset built here teaches the
demo model "standing" (in its vocabulary, never drawn by its world): with the LoRA, prompts that say
"standing" get the figure standing on a floor, and the same prompts without the word do not; the base model
draws no floor. Images are sampled as users sample them (the model's defaults: CFG 4 with the empty negative)."""

import random

import pytest
import torch

import newbie
from newbie.cli.main import main
from tests.train.standing import build_dataset, floor_darkness, single_scene, with_action

STEPS, IMAGES, SCENES = 250, 48, 8
THREADS = 1  # fixed, so the arithmetic is the measured run's whatever the machine's thread default (docs/training.md)
# Thresholds on the floor band's darkness, as a contrast with the base model's image for the same prompt and
# seed. Measured (docs/training.md, 12 held-out scenes): drawn floor +0.80 on average, without the word +0.06
# (one scene in 12 leaked a floor), base model at most 0.003.
APPEARS, ABSENT, BASE_MAX = 0.5, 0.25, 0.1


def _mean(xs):
    return sum(xs) / len(xs)


@pytest.mark.slow
def test_lora_teaches_standing(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        _prove(tmp_path)
    finally:
        torch.set_num_threads(threads)


def _prove(tmp_path):
    data, out = tmp_path / "data", tmp_path / "standing.safetensors"
    build_dataset(data, IMAGES)
    argv = ["train", "lora", str(data), "--out", str(out), "--device", "cpu", "--quiet"]
    # the default targets; the seed matters at this budget (docs/training.md: --seed 1 fails)
    argv += ["--steps", str(STEPS), "--rank", "8", "--lr", "3e-3", "--batch", "4", "--seed", "0"]
    assert main(argv) == 0
    assert out.with_name("standing-loss.png").is_file()

    pipe = newbie.load(device="cpu")
    rng = random.Random(99)  # held-out figures, at each position in turn
    scenes = [single_scene(rng, ("left", "center", "right")[k % 3]) for k in range(SCENES)]

    def darkness(loras, action):
        return [
            round(floor_darkness(pipe.generate(with_action(s, action), seed=k, loras=loras).images[0]), 3)
            for k, s in enumerate(scenes)
        ]

    base = darkness([], "standing")
    word, no_word = darkness([str(out)], "standing"), darkness([str(out)], "")
    print("floor darkness with the word", word, "without", no_word, "base", base)
    assert max(base) < BASE_MAX, base
    lift = [w - b for w, b in zip(word, base)]
    leak = [n - b for n, b in zip(no_word, base)]
    assert _mean(lift) > APPEARS, lift
    assert _mean(leak) < ABSENT, leak
    assert sum(x > APPEARS for x in lift) >= SCENES - 2, lift  # scene by scene, not a few very dark ones

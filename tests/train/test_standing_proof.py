"""The CPU proof of issue 25: a LoRA trained with `newbie train lora` on a small dataset built here teaches the
demo model "standing" (in its vocabulary, never drawn by its world): with the LoRA, prompts that say
"standing" get the figure standing on a floor, and the same prompts without the word do not; the base model
draws no floor."""

import random

import pytest

import newbie
from newbie.cli.main import main
from tests.train.standing import build_dataset, floor_darkness, single_scene, with_action

STEPS, IMAGES, SCENES = 250, 48, 8
FLOOR = 0.4  # darkness of the bottom band above which an image has a floor (drawn: about 0.7)


@pytest.mark.slow
def test_lora_teaches_standing(tmp_path):
    data, out = tmp_path / "data", tmp_path / "standing.safetensors"
    build_dataset(data, IMAGES)
    argv = ["train", "lora", str(data), "--out", str(out), "--device", "cpu", "--quiet"]
    argv += ["--steps", str(STEPS), "--rank", "8", "--lr", "3e-3", "--batch", "4", "--targets", "full"]
    assert main(argv) == 0
    assert out.with_name("standing-loss.png").is_file()

    pipe = newbie.load(device="cpu")
    rng = random.Random(99)  # held-out figures, at each position in turn
    scenes = [single_scene(rng, ("left", "center", "right")[k % 3]) for k in range(SCENES)]

    def floors(loras, action):
        d = [
            floor_darkness(pipe.generate(with_action(s, action), seed=k, loras=loras).images[0])
            for k, s in enumerate(scenes)
        ]
        return sum(x > FLOOR for x in d), [round(x, 3) for x in d]

    (with_word, a), (without_word, b) = floors([str(out)], "standing"), floors([str(out)], "")
    (base, c) = floors([], "standing")
    print("floor darkness with the word", a, "without", b, "base", c)
    # a 250-step LoRA on a CPU: the word switches the floor on for most seeds and off for nearly all
    assert with_word >= SCENES * 5 // 8, a
    assert without_word <= SCENES // 4, b
    assert base == 0, c

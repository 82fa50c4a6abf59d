import random

from newbie.demo.evaluate import held_out_scenes, score
from newbie.demo.world import (
    INVISIBLE,
    held_out_triples,
    random_scene,
    render,
    scene_triples,
    tag_caption,
    xml_caption,
)
from newbie.prompts import lint, parse


def test_renderer_and_scorer_agree_on_ground_truth():
    scenes = held_out_scenes()
    result = score(render(scenes), scenes)
    assert result["hair_accuracy"] == 1.0 and result["background_accuracy"] == 1.0


def test_training_scenes_never_contain_held_out_combinations():
    rng = random.Random(0)
    held = held_out_triples()
    assert len(held) == 10
    for _ in range(500):
        s = random_scene(rng, held)
        assert not scene_triples(s) & held
        assert all((c.hair, s.background) not in INVISIBLE for c in s.characters)
        assert len({c.position for c in s.characters}) == len(s.characters)


def test_captions_are_valid_newbie_xml_and_lint_clean():
    rng = random.Random(1)
    for _ in range(50):
        s = random_scene(rng)
        p = parse(xml_caption(s))
        assert p.kind == "xml" and len(p.characters) == len(s.characters)
        assert lint(xml_caption(s)) == []
        assert parse(tag_caption(s)).kind == "tags"

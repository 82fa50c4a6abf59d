"""What the precision study and the trace use by default (prompts, seeds, steps), chosen by the spec's name.

The toy demo model only knows its toy world's words, so it gets toy-world captions (built from fixed
scenes, two XML multi-character prompts and one plain-tag prompt); every other model gets the NewBie set.
"""

from __future__ import annotations

TOY_SPECS = ("newbie-toy-demo", "random-tiny")

NEWBIE_PROMPTS = (
    # three characters, XML: the format NewBie was trained on and the hardest case for binding
    "<character_1> <n>$character_1$</n> <gender>1girl</gender> "
    "<appearance>long_hair, red_hair, blue_eyes</appearance> <clothing>school_uniform</clothing> "
    "<expression>smile</expression> <position>left</position> </character_1> "
    "<character_2> <n>$character_2$</n> <gender>1boy</gender> "
    "<appearance>short_hair, black_hair, green_eyes</appearance> "
    "<clothing>white_shirt</clothing> <position>right</position> </character_2> "
    "<character_3> <n>$character_3$</n> <gender>1girl</gender> <appearance>twintails, pink_hair</appearance> "
    "<clothing>maid</clothing> <position>center</position> </character_3> "
    "<general_tags> <count>2girls, 1boy</count> <background>classroom, window, sunlight</background> "
    "<style>anime_coloring</style> </general_tags>",
    # two characters, XML
    "<character_1> <n>$character_1$</n> <gender>1girl</gender> "
    "<appearance>silver_hair, yellow_eyes</appearance> <clothing>black_dress</clothing> "
    "<action>holding_umbrella</action> <position>left</position> </character_1> "
    "<character_2> <n>$character_2$</n> <gender>1girl</gender> "
    "<appearance>blonde_hair, ponytail</appearance> "
    "<clothing>raincoat</clothing> <position>right</position> </character_2> "
    "<general_tags> <count>2girls</count> <background>street, rain, night</background> </general_tags>",
    # plain danbooru tags
    "1girl, solo, long_hair, blue_hair, red_eyes, kimono, cherry_blossoms, outdoors, looking_at_viewer, "
    "upper_body",
)


def toy_prompts() -> tuple[str, ...]:
    import random

    from newbie.demo.world import random_scene, tag_caption, xml_caption

    rng = random.Random(7)  # fixed scenes: the same prompts on every run
    return (
        xml_caption(random_scene(rng, n=3)),
        xml_caption(random_scene(rng, n=2)),
        tag_caption(random_scene(rng, n=1)),
    )


def default_prompts(spec_name: str) -> tuple[str, ...]:
    return toy_prompts() if spec_name in TOY_SPECS else NEWBIE_PROMPTS


def default_seeds(spec_name: str) -> tuple[int, ...]:
    # One seed for the toy model keeps the CPU study under two minutes; two for a real model.
    return (0,) if spec_name in TOY_SPECS else (0, 1)


def default_steps(spec_name: str) -> int | None:
    """Steps of the study when none are asked for; None: the model's own default.
    The toy model draws its flat-colour world in 10 Euler steps; its default 20, over five dtypes of which
    four run slowly on a CPU, would not fit the two-minute budget."""
    return 10 if spec_name in TOY_SPECS else None

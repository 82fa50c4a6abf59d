"""A recipe made with ComfyUI's noise and schedule is re-made the same from the UI form."""

import numpy as np

from newbie.ui import form


def test_form_from_a_comfy_recipe_keeps_noise_and_schedule(tiny_pipeline):
    first = tiny_pipeline.generate(
        "1girl",
        seed=9,
        steps=2,
        width=32,
        height=32,
        batch=2,
        noise="comfy",
        schedule="simple",
        sampler="res_multistep",
    )
    values = form.from_recipe(first.recipes[0])
    s = form.settings(values)
    again = tiny_pipeline.generate(values["prompt"], s.negative, batch=2, **form.generate_kwargs(s))
    assert (again.recipes[1].noise, again.recipes[1].schedule) == ("comfy", "simple")
    assert np.array_equal(np.asarray(again.images[1]), np.asarray(first.images[1]))

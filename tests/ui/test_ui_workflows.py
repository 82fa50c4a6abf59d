"""The "Artist workflows" part of the form: widget values <-> request kwargs, without Streamlit."""

import io

import numpy as np
import pytest
from PIL import Image

from newbie.config import SPECS
from newbie.errors import NewbieError
from newbie.ui import form, workflows

from .conftest import make_recipe


def values(**changes):
    return {**form.defaults(SPECS["newbie-exp0.1"]), **changes}


def test_an_untouched_expander_is_plain_text_to_image():
    kwargs = form.generate_kwargs(form.settings(values()))
    workflow_keys = {"loras", "fuse_loras", "init_image", "strength", "mask", "mask_feather", "hires"}
    assert not workflow_keys & set(kwargs)


def test_hires_toggle_and_scale():
    assert form.generate_kwargs(form.settings(values(hires=True)))["hires"] == 2.0
    assert form.generate_kwargs(form.settings(values(hires=True, hires_scale=1.5)))["hires"] == 1.5
    assert "hires" not in form.generate_kwargs(form.settings(values(hires=False, hires_scale=1.5)))
    exact = {"width": 1536, "height": 1536, "upscaler": "latent", "strength": 0.55, "steps": 9}
    assert form.generate_kwargs(form.settings(values(hires=True, hires_recipe=exact)))["hires"] == exact
    assert "hires" not in form.generate_kwargs(form.settings(values(hires=False, hires_recipe=exact)))


def test_lora_lines():
    text = "output/my_style/:0.8\n\n# off for now\nC:/loras/a.safetensors\n  b.safetensors:-0.5  "
    assert workflows.parse_lora_lines(text) == [
        ("output/my_style/", 0.8),
        ("C:/loras/a.safetensors", 1.0),
        ("b.safetensors", -0.5),
    ]
    kwargs = form.generate_kwargs(form.settings(values(loras="a.safetensors:0.7", fuse_loras=True)))
    assert kwargs["loras"] == [("a.safetensors", 0.7)] and kwargs["fuse_loras"] is True
    with pytest.raises(NewbieError, match="LoRA line 2 has no path"):
        workflows.parse_lora_lines("a.safetensors\n:0.5")


def test_images_strength_and_mask():
    picture, mask = Image.new("RGB", (64, 64)), Image.new("L", (64, 64), 255)
    kwargs = form.generate_kwargs(form.settings(values(init_image=picture, strength=0.35)))
    assert kwargs["init_image"] is picture and kwargs["strength"] == 0.35 and "mask" not in kwargs
    kwargs = form.generate_kwargs(
        form.settings(values(init_image=picture, mask=mask, strength=1.0, mask_feather=4))
    )
    assert kwargs["mask"] is mask and (kwargs["strength"], kwargs["mask_feather"]) == (1.0, 4)
    with pytest.raises(NewbieError, match="a mask needs an init image"):
        form.settings(values(mask=mask))
    recorded = form.generate_kwargs(form.settings(values(init_image_path="in.png", mask_path="m.png")))
    assert (recorded["init_image"], recorded["mask"]) == ("in.png", "m.png")
    upload_wins = form.generate_kwargs(form.settings(values(init_image=picture, init_image_path="in.png")))
    assert upload_wins["init_image"] is picture


def test_uploads_open_in_memory():
    buf = io.BytesIO()
    Image.new("RGB", (32, 16), (200, 10, 10)).save(buf, format="PNG")
    image = workflows.open_upload(buf, "init image")
    assert image.size == (32, 16) and image.getpixel((0, 0)) == (200, 10, 10)
    assert workflows.open_upload(None, "mask") is None
    with pytest.raises(NewbieError, match="mask 'the upload' is not a readable image"):
        workflows.open_upload(io.BytesIO(b"not a png"), "mask")


def test_recipe_back_into_the_widgets():
    recipe = make_recipe(
        width=64,
        height=64,
        loras=[{"path": "a/", "strength": 0.8, "kind": "lora"}, {"path": "b.safetensors", "strength": 1.0}],
        fuse_loras=True,
        init_image="in.png",
        strength=0.9,
        mask="m.png",
        mask_feather=3,
        hires={"width": 96, "height": 96, "upscaler": "pixel", "strength": 0.5, "steps": 2},
    )
    v = form.from_recipe(recipe)
    assert (v["hires"], v["hires_scale"], v["hires_recipe"]["width"]) == (True, 1.5, 96)
    assert v["loras"] == "a/:0.8\nb.safetensors:1" and v["fuse_loras"] is True
    images = (v["init_image_path"], v["mask_path"], v["strength"], v["mask_feather"])
    assert images == ("in.png", "m.png", 0.9, 3)
    plain = form.from_recipe(make_recipe())
    assert {k: plain[k] for k in workflows.workflow_defaults()} == workflows.workflow_defaults()


def test_use_these_settings_remakes_an_img2img_hires_image(tiny_pipeline, tmp_path):
    source = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(source)
    first = tiny_pipeline.generate(
        "1girl", seed=3, steps=2, cfg=3.0, sampler="euler", init_image=str(source), strength=0.7, hires=1.5
    )
    v = form.from_recipe(first.recipes[0])
    s = form.settings(v)
    again = tiny_pipeline.generate(v["prompt"], s.negative, **form.generate_kwargs(s))
    assert again.recipes[0] == first.recipes[0]
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(first.images[0]))

import pytest
from PIL import Image

from newbie.errors import NewbieError
from newbie.pipeline.images import save_png
from newbie.pipeline.recipe import PNG_KEY, Recipe, png_chunks


def _recipe(**kw):
    base = dict(
        prompt="<character_1>ünïcode</character_1>",
        negative="",
        seed=2**40,
        steps=18,
        cfg=5.0,
        sampler="midpoint",
        shift=6.0,
        width=1024,
        height=768,
        cfg_trunc=0.25,
        renorm_cfg=0.0,
        dtype="bf16",
        text_dtype="bf16",
        vae_dtype="fp32",
        device="cuda",
        model="NewBie-image-Exp0.1",
        model_hash="ab" * 32,
        version="0.1.0",
        batch_size=2,
        batch_index=1,
        warnings=["image is all black"],
    )
    base.update(kw)
    return Recipe(**base)


def test_recipe_round_trips_through_png(tmp_path):
    r = _recipe()
    path = save_png(Image.new("RGB", (8, 8)), r, tmp_path / "sub" / "a.png")
    assert Recipe.from_json(png_chunks(path)[PNG_KEY]) == r
    with Image.open(path) as im:
        assert "Steps: 18, Sampler: midpoint, CFG scale: 5.0, Seed: 1099511627776" in im.info["parameters"]
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.png"]  # no temporary file left behind


def test_png_without_recipe_and_missing_files(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    assert PNG_KEY not in png_chunks(tmp_path / "plain.png")
    with pytest.raises(NewbieError, match="no such image"):
        png_chunks(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(NewbieError, match="not a readable image"):
        png_chunks(tmp_path / "bad.png")

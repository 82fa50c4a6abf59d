"""img2img, inpainting and hires through generate(), recipes, remake and the CLI, on images the tests draw."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from newbie.cli.main import main
from newbie.errors import NewbieError
from newbie.pipeline.images import to_pil
from newbie.pipeline.img2img import to_tensor

ARGS = dict(seed=5, steps=3, sampler="euler", cfg=1.0)


def _picture(path, w=32, h=32, seed=0):
    """Smooth colour gradients plus a block: something a VAE round trip keeps recognisable."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx * 255 / w, yy * 255 / h, np.full_like(xx, 90.0)], -1)
    arr[h // 4 : h // 2, w // 4 : w // 2] = rng.integers(0, 255, 3)
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return path


def _mask(path, w=32, h=32):
    arr = np.zeros((h, w), np.uint8)
    arr[:, : w // 2] = 255  # repaint the left half
    Image.fromarray(arr).save(path)
    return path


def test_strength_zero_returns_the_vae_round_trip(tmp_path, tiny_pipeline):
    src = _picture(tmp_path / "in.png")
    gen = tiny_pipeline.generate("1girl", init_image=src, strength=0.0, **ARGS)
    with Image.open(src) as im:
        latent = tiny_pipeline.codec.encode(to_tensor(im.convert("RGB")))
    round_trip = to_pil(tiny_pipeline.codec.decode(latent))[0]
    assert gen.images[0].size == (32, 32)  # size taken from the input
    assert torch.equal(gen.latents, latent)
    assert gen.images[0].tobytes() == round_trip.tobytes()


def test_strength_one_is_text_to_image_and_lower_strength_stays_closer(tmp_path, tiny_pipeline):
    src = _picture(tmp_path / "in.png")
    txt = tiny_pipeline.generate("1girl", width=32, height=32, **ARGS)
    full = tiny_pipeline.generate("1girl", init_image=src, strength=1.0, **ARGS)
    assert full.images[0].tobytes() == txt.images[0].tobytes()
    with Image.open(src) as im:
        latent = tiny_pipeline.codec.encode(to_tensor(im.convert("RGB")))
    dist = [
        float(
            (tiny_pipeline.generate("1girl", init_image=src, strength=s, **ARGS).latents - latent)
            .abs()
            .mean()
        )
        for s in (0.2, 0.8)
    ]
    assert 0 < dist[0] < dist[1]


def test_inpainting_keeps_unmasked_pixels_exactly(tmp_path, tiny_pipeline):
    src, mask = _picture(tmp_path / "in.png"), _mask(tmp_path / "mask.png")
    gen = tiny_pipeline.generate("1girl", init_image=src, mask=mask, mask_feather=3, batch=2, **ARGS)
    original = np.asarray(Image.open(src).convert("RGB"))
    for image in gen.images:
        out = np.asarray(image)
        assert np.array_equal(out[:, 16:], original[:, 16:])  # black in the mask: kept exactly
        assert not np.array_equal(out[:, :13], original[:, :13])  # white, past the 3 px feather: repainted
    rec = gen.recipes[0]
    assert (rec.strength, rec.mask_feather, len(rec.mask_sha256), rec.mask) == (1.0, 3, 64, str(mask))


def test_inputs_are_fitted_to_the_request_and_bad_ones_are_one_line(tmp_path, tiny_pipeline):
    src = _picture(tmp_path / "odd.png", w=40, h=36)
    req = tiny_pipeline.request("1girl", init_image=src)
    assert (req.width, req.height, req.image.strength) == (32, 32, 0.6)
    assert any("resized to 32x32" in w for w in req.warnings)
    assert tiny_pipeline.request("1girl", init_image=src, width=64).height == 48  # aspect kept
    _mask(tmp_path / "small.png", 8, 8)
    for kwargs, message in [
        (dict(mask=tmp_path / "small.png"), "needs an input image"),
        (dict(strength=0.5), "needs an input image"),
        (dict(init_image=src, strength=1.5), "strength must be between 0 and 1, got 1.5"),
        (dict(init_image=src, mask=tmp_path / "small.png"), "mask is 8x8 but the input image is 40x36"),
        (dict(init_image=tmp_path / "none.png"), "no such input image"),
        (dict(init_image=src, mask_feather=2), "needs a mask"),
        (
            dict(init_image=_picture(tmp_path / "m.png"), mask=_mask(tmp_path / "mm.png"), hires=True),
            "hires is not available with inpainting",
        ),
    ]:
        with pytest.raises(NewbieError, match=message):
            tiny_pipeline.request("1girl", **kwargs)


@pytest.mark.parametrize("upscaler", ["latent", "pixel"])
def test_hires_pass_makes_the_target_size_and_remakes_bit_for_bit(tiny_pipeline, upscaler):
    seen = []
    gen = tiny_pipeline.generate(
        "1girl",
        width=32,
        height=32,
        hires={"scale": 2, "upscaler": upscaler, "steps": 2},
        progress=lambda info: seen.append((info["step"], info["steps"])),
        **ARGS,
    )
    assert gen.images[0].size == (64, 64) and gen.latents.shape[-2:] == (8, 8)
    assert seen == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]  # one progress run over both passes
    rec = gen.recipes[0]
    assert (rec.width, rec.hires["width"], rec.hires["upscaler"], rec.hires["strength"]) == (
        32,
        64,
        upscaler,
        0.5,
    )
    assert tiny_pipeline.remake(rec).images[0].tobytes() == gen.images[0].tobytes()


def test_cli_img2img_inpaint_from_recipe(tiny_model_dir, tmp_path, capsys):
    src, mask = _picture(tmp_path / "in.png"), _mask(tmp_path / "mask.png")
    out = tmp_path / "a.png"
    common = ["--model", str(tiny_model_dir), "--quiet"]
    assert (
        main(
            [
                "generate",
                "1girl",
                "--init-image",
                str(src),
                "--mask",
                str(mask),
                "--strength",
                "0.7",
                "--steps",
                "2",
                "--cfg",
                "1",
                "--out",
                str(out),
                *common,
            ]
        )
        == 0
    )
    with Image.open(out) as im:
        rec = json.loads(im.info["newbie"])
    assert rec["init_image"] == str(src) and rec["strength"] == 0.7 and len(rec["init_image_sha256"]) == 64
    assert main(["generate", "--from", str(out), "--out", str(tmp_path / "b.png"), *common]) == 0
    assert (tmp_path / "b.png").read_bytes() == out.read_bytes()
    _picture(src, seed=1)  # the input file now holds other pixels
    capsys.readouterr()
    assert main(["generate", "--from", str(out), "--out", str(tmp_path / "c.png"), *common]) == 2
    err = capsys.readouterr().err
    assert "its pixels differ from the recipe's input image" in err and "--init-image" in err
    assert not (tmp_path / "c.png").exists()

"""The img2img schedule, the inpainting model wrapper and the mask feather, on analytic cases (no model)."""

import pytest
import torch

from newbie.errors import NewbieError
from newbie.pipeline.img2img import feather, hires_spec
from newbie.sampling.loop import keep_unmasked
from newbie.sampling.samplers import SAMPLERS
from newbie.sampling.schedules import flow_sigmas, img2img_sigmas


def test_strength_one_is_the_text_to_image_grid_and_zero_runs_no_step():
    assert torch.equal(img2img_sigmas(7, 6.0, 1.0), flow_sigmas(7, 6.0))
    assert img2img_sigmas(7, 6.0, 0.0).tolist() == [0.0]
    s = img2img_sigmas(5, 6.0, 0.4)
    assert len(s) == 6 and s[0] == pytest.approx(0.4) and s[-1] == 0 and bool((s[1:] < s[:-1]).all())
    # the same curve as the full grid: every point satisfies the shift relation of flow_sigmas
    full = flow_sigmas(1000, 6.0)
    assert float(s[2]) == pytest.approx(float(full[(full - s[2]).abs().argmin()]), abs=2e-3)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_inpainting_wrapper_keeps_the_unmasked_latent_with_every_sampler(sampler):
    g = torch.Generator().manual_seed(0)
    latent, noise = torch.randn(1, 4, 6, 6, generator=g), torch.randn(1, 4, 6, 6, generator=g)
    mask = torch.zeros(1, 1, 6, 6)
    mask[..., 2:5, 1:4] = 1.0

    def wild_model(x, sigma):  # any velocity: the kept area must not care
        return torch.sin(3 * x) + sigma

    sigmas = img2img_sigmas(6, 3.0, 0.8)
    start = float(sigmas[0])
    x = SAMPLERS[sampler](
        keep_unmasked(wild_model, mask, latent, noise), (1 - start) * latent + start * noise, sigmas
    )
    keep = mask == 0
    torch.testing.assert_close(
        x.expand_as(latent)[keep.expand_as(latent)], latent[keep.expand_as(latent)], rtol=0, atol=1e-5
    )
    assert not torch.allclose(x[..., 3, 2], latent[..., 3, 2], atol=1e-2)  # the masked area was generated


def test_feather_ramps_inside_the_mask_and_is_zero_outside():
    m = torch.zeros(1, 1, 40, 40)
    m[..., 10:30, 10:30] = 1.0
    f = feather(m, 4)
    assert bool((f[m == 0] == 0).all())  # outside the user's mask: exactly 0
    assert (
        f[0, 0, 20, 20] == 1.0
        and f[0, 0, 10, 20] == 0.25
        and f[0, 0, 11, 20] == 0.5
        and f[0, 0, 13, 20] == 1.0
    )
    edge = torch.zeros(1, 1, 8, 8)
    edge[..., :, :4] = 1.0
    assert feather(edge, 2)[0, 0, 4, 0] == 1.0  # the image border does not count as an edge
    assert torch.equal(feather(m, 0), m)


def test_hires_spec_forms_and_errors():
    assert hires_spec(True, 64, 48, 8, 2048) == hires_spec(2, 64, 48, 8, 2048)
    h = hires_spec("1.5", 64, 48, 8, 2048)
    assert (h.width, h.height, h.upscaler, h.strength, h.steps) == (96, 80, "pixel", 0.5, 4)
    assert (
        hires_spec({"width": 128, "height": 96, "upscaler": "latent", "steps": 3}, 64, 48, 8, 2048).steps == 3
    )
    assert hires_spec(None, 64, 48, 8, 2048) is None and hires_spec(False, 64, 48, 8, 2048) is None
    for bad, message in [
        ("2x", "hires must be a scale"),
        ("100x64", "hires width 100 is not a positive multiple"),
        (9, "hires scale must be"),
        ({"upscaler": "esrgan"}, "unknown hires upscaler"),
        ({"strength": 2}, "hires strength must be"),
        ({"denoise": 1}, "unknown hires setting"),
    ]:
        with pytest.raises(NewbieError, match=message):
            hires_spec(bad, 64, 48, 8, 2048)
    with pytest.raises(NewbieError, match="larger than 2048"):
        hires_spec(4, 1024, 1024, 8, 2048)


def test_recipes_from_before_these_workflows_still_load_and_remake_as_text_to_image():
    import json

    from newbie.adapters.recipe import remake_kwargs as lora_kwargs
    from newbie.pipeline.img2img import remake_kwargs as image_kwargs
    from newbie.pipeline.recipe import Recipe

    old = {
        "prompt": "1girl",
        "negative": "",
        "seed": 1,
        "steps": 2,
        "cfg": 1.0,
        "sampler": "euler",
        "shift": 6.0,
        "width": 32,
        "height": 32,
        "cfg_trunc": 1.0,
        "renorm_cfg": 0.0,
        "dtype": "fp32",
        "text_dtype": "fp32",
        "vae_dtype": "fp32",
        "device": "cpu",
        "model": "m",
        "model_hash": "0" * 64,
        "version": "0.1.0",
    }
    rec = Recipe.from_json(json.dumps(old))
    assert rec.loras == [] and rec.hires is None and rec.init_image_sha256 == "" and rec.strength is None
    assert lora_kwargs(rec) == {} and image_kwargs(rec) == {"hires": None}

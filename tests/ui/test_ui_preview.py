import pytest
import torch
import torch.nn.functional as F

from newbie.config import VAEConfig
from newbie.pipeline.images import to_pil
from newbie.ui.preview import FitStats, Previewer, pooled_colours, probe_stats


class LinearCodec:
    """A stand-in VAE whose decode is linear per latent pixel (then upsampled): the fit is known."""

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.cfg = VAEConfig(latent_channels=16, downscale=8)
        self.vae = torch.nn.Linear(1, 1)
        self.weight = torch.randn(16, 3, generator=g) * 0.05
        self.bias = torch.tensor([0.5, 0.4, 0.6])

    def decode(self, z):
        rgb = torch.einsum("bchw,cd->bdhw", z, self.weight) + self.bias[None, :, None, None]
        return F.interpolate(rgb, scale_factor=8, mode="nearest")


def test_fit_recovers_a_linear_decoder():
    codec = LinearCodec()
    projection = probe_stats(codec).solve()
    assert torch.allclose(projection.weight, codec.weight, atol=1e-3)
    assert torch.allclose(projection.bias, codec.bias, atol=1e-3)
    z = torch.randn(16, 5, 7)
    assert projection.image(z, scale=8).size == (56, 40)


def test_learnt_fit_is_kept_per_model_across_restarts(tmp_path):
    codec, store = LinearCodec(), tmp_path / "preview" / "model.npz"
    first = Previewer(codec, store)
    z = torch.randn(2, 16, 6, 6)
    first.learn(z, to_pil(codec.decode(z)))  # decoded PIL images, as a Generation hands them over
    assert store.is_file()
    again = Previewer(codec, store)
    assert again.learnt.pixels == 2 * 6 * 6
    assert torch.allclose(again.projection.weight, codec.weight, atol=0.02)


def test_damaged_store_starts_over(tmp_path):
    store = tmp_path / "bad.npz"
    store.write_bytes(b"not numpy")
    assert FitStats.load(store, 16).pixels == 0


@pytest.mark.slow
def test_demo_model_preview_matches_the_decoded_image_after_one_generation():
    import newbie

    pipe = newbie.load()
    previewer = Previewer(pipe.codec)
    prompt = "<character_1> <gender>1girl</gender> <appearance>red_hair</appearance> </character_1>"
    first = pipe.generate(prompt, seed=1, steps=8)
    second = pipe.generate(prompt, seed=2, steps=8)
    truth = pooled_colours(pipe.codec.decode(second.latents), 8)[0]
    probe_error = (previewer.projection.rgb(second.latents[0]) - truth).abs().mean()  # before any generation
    previewer.learn(first.latents, first.images)
    error = (previewer.projection.rgb(second.latents[0]) - truth).abs().mean()
    # the alternatives a preview must beat, both known before the second image exists: the probe map, and one
    # flat colour (the first image's mean). Retrained demo model (2026-12-01): 0.032 vs 0.067 and 0.043.
    first_mean = pooled_colours(pipe.codec.decode(first.latents), 8)[0].mean(dim=(1, 2), keepdim=True)
    assert error < 0.6 * probe_error
    assert error < 0.85 * (first_mean - truth).abs().mean()

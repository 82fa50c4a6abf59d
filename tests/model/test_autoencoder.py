"""Our AutoencoderKL against diffusers' (the reference) on tiny random configs: the same seeded weights under
the same names, bit-identical encode and decode in fp32 and bf16 (the same operations in the same order),
tiled encode and decode equal to diffusers' tiled ones, and the config read and written as diffusers does."""

import copy
import json

import pytest
import torch
from diffusers import AutoencoderKL as DiffusersAutoencoderKL

from newbie.demo.model import PACKAGED
from newbie.loading.comfy import FLUX_VAE_CONFIG
from newbie.model.autoencoder import AutoencoderConfig, AutoencoderKL

CONFIGS = {
    "two-blocks": dict(block_out_channels=[8, 16], layers_per_block=1, norm_num_groups=4),
    "three-blocks-quant": dict(
        block_out_channels=[8, 16, 16], layers_per_block=2, norm_num_groups=4, use_quant_conv=True
    ),
    "no-attention": dict(block_out_channels=[4, 8, 8], norm_num_groups=2, mid_block_add_attention=False),
}


def _raw(**over) -> dict:
    n = len(over["block_out_channels"])
    raw = dict(
        down_block_types=["DownEncoderBlock2D"] * n,
        up_block_types=["UpDecoderBlock2D"] * n,
        latent_channels=4,
        use_quant_conv=False,
        use_post_quant_conv=False,
        sample_size=32,
    )
    return {**raw, **over}


def _pair(raw: dict, seed: int = 0):
    torch.manual_seed(seed)
    theirs = DiffusersAutoencoderKL.from_config(raw).eval()
    torch.manual_seed(seed)
    ours = AutoencoderKL(AutoencoderConfig.from_dict(raw)).eval()
    return theirs, ours


@pytest.fixture(params=list(CONFIGS), scope="module")
def pair(request):
    raw = _raw(**CONFIGS[request.param])
    if request.param == "three-blocks-quant":
        raw["use_post_quant_conv"] = True
    return _pair(raw)


def _inputs(ours: AutoencoderKL, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    f = ours.config.downscale
    x = torch.rand(2, 3, 5 * f, 6 * f, generator=g) * 2 - 1
    z = torch.randn(2, 4, 5, 6, generator=g)
    return x.to(dtype), z.to(dtype)


def test_same_seed_same_weights_same_names(pair):
    """A random checkpoint made with our class is the one diffusers' would make (names, order, values)."""
    theirs, ours = pair
    a, b = theirs.state_dict(), ours.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@torch.no_grad()
def test_encode_and_decode_equal_diffusers(pair, dtype):
    theirs, ours = (copy.deepcopy(m).to(dtype) for m in pair)
    x, z = _inputs(ours, dtype)
    decoded = ours.decode(z)
    assert decoded.shape == (2, 3, 5 * ours.config.downscale, 6 * ours.config.downscale)
    assert decoded.dtype == dtype
    assert torch.equal(decoded, theirs.decode(z).sample)
    encoded = ours.encode(x)
    assert encoded.shape == (2, 4, 5, 6)
    assert torch.equal(encoded, theirs.encode(x).latent_dist.mode())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@torch.no_grad()
def test_tiled_encode_and_decode_equal_diffusers_tiled(dtype):
    """Tiles smaller than the input (3 x 3 tiles, the last ones ragged): the same blends and crops. And
    tiling changes the result (else this would not test the tiled path)."""
    raw = _raw(block_out_channels=[4, 8], norm_num_groups=2, use_quant_conv=True, use_post_quant_conv=True)
    theirs, ours = (m.to(dtype) for m in _pair(raw))
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(1, 3, 28, 34, generator=g) * 2 - 1).to(dtype)
    z = torch.randn(1, 4, 14, 17, generator=g).to(dtype)
    whole_x, whole_z = ours.encode(x), ours.decode(z)
    for m in (theirs, ours):
        m.enable_tiling()
        m.tile_sample_min_size, m.tile_latent_min_size = 16, 8
    tiled = ours.decode(z)
    assert tiled.shape == whole_z.shape and not torch.equal(tiled, whole_z)
    assert torch.equal(tiled, theirs.decode(z).sample)
    tiled = ours.encode(x)
    assert tiled.shape == whole_x.shape and not torch.equal(tiled, whole_x)
    assert torch.equal(tiled, theirs.encode(x).latent_dist.mode())
    ours.disable_tiling()
    assert torch.equal(ours.decode(z), whole_z)


def test_tile_sizes_default_like_diffusers():
    for raw in (json.loads(FLUX_VAE_CONFIG.read_text()), _raw(**CONFIGS["two-blocks"], sample_size=[64, 64])):
        with torch.device("meta"):
            theirs = DiffusersAutoencoderKL.from_config(raw)
            ours = AutoencoderKL(AutoencoderConfig.from_dict(raw))
        assert ours.tile_latent_min_size == theirs.tile_latent_min_size
        size = raw["sample_size"]
        assert ours.tile_sample_min_size == (size if isinstance(size, int) else size[0])
        assert ours.tile_overlap_factor == theirs.tile_overlap_factor and not ours.use_tiling


@pytest.mark.parametrize("source", ["demo", "flux"])
def test_config_reads_and_writes_as_diffusers(source, tmp_path):
    """dict(config) (the ComfyUI sidecar) and config.json (save_pretrained) as diffusers gives them, the file's
    own extra keys included."""
    path = PACKAGED / "vae" / "config.json" if source == "demo" else FLUX_VAE_CONFIG
    raw = json.loads(path.read_text())
    with torch.device("meta"):
        theirs = DiffusersAutoencoderKL.from_config(raw)
    cfg = AutoencoderConfig.from_dict(raw)
    assert cfg.to_dict() == dict(theirs.config)
    assert list(cfg.to_dict()) == list(theirs.config)
    theirs.save_config(str(tmp_path))
    assert cfg.to_json() == (tmp_path / "config.json").read_text()


def test_missing_keys_take_diffusers_defaults():
    raw = {"block_out_channels": [8], "norm_num_groups": 4}
    with torch.device("meta"):
        theirs = DiffusersAutoencoderKL.from_config(raw)
    ours = AutoencoderConfig.from_dict(raw).to_dict()
    assert ours == {k: v for k, v in dict(theirs.config).items() if k != "_use_default_values"}


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"down_block_types": ["DownBlock2D", "DownEncoderBlock2D"]},
            "down_block_types must be 2 x DownEncoder",
        ),
        ({"up_block_types": ["UpDecoderBlock2D"]}, "up_block_types must be 2 x UpDecoderBlock2D"),
        (
            {"block_out_channels": [8, 10]},
            r"block_out_channels \[8, 10\] must be multiples of norm_num_groups 4",
        ),
        ({"block_out_channels": []}, "block_out_channels must be a non-empty list"),
        ({"latent_channels": "16"}, "latent_channels must be a positive integer, got '16'"),
        ({"act_fn": "tanh"}, "act_fn 'tanh' is not one of silu"),
    ],
)
def test_unbuildable_configs_are_named(change, message):
    raw = {**_raw(**CONFIGS["two-blocks"]), **change}
    with pytest.raises(ValueError, match=f"^VAE config: {message}"):
        AutoencoderConfig.from_dict(raw)


@torch.no_grad()
def test_demo_vae_decodes_and_encodes_as_diffusers_did():
    """The embedded demo model's VAE (trained weights) through our loader: the pictures it makes are
    bit-identical to the ones diffusers' AutoencoderKL made before."""
    from newbie.loading.vae import load_vae

    ours, _ = load_vae(PACKAGED / "vae")
    with torch.device("meta"):
        theirs = DiffusersAutoencoderKL.from_config(
            json.loads((PACKAGED / "vae" / "config.json").read_text())
        )
    theirs.load_state_dict(ours.state_dict(), assign=True)
    z = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(3))
    image = ours.decode(z)
    assert torch.equal(image, theirs.decode(z).sample)
    assert torch.equal(ours.encode(image), theirs.encode(image).latent_dist.mode())

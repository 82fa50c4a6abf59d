"""Loading the VAE: both key layouts (diffusers, BFL/LDM as in ae.safetensors) load into our AutoencoderKL
without importing diffusers or transformers; a config it cannot build is one CheckpointError line."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from newbie.demo.model import PACKAGED
from newbie.errors import CheckpointError
from newbie.loading.comfy_writer import vae_bfl_keys
from newbie.loading.safetensors_io import component_files, read_headers
from newbie.loading.vae import check_vae, load_vae

SRC = Path(__file__).resolve().parents[2] / "src"

# a fresh interpreter: read + build both layouts, decode and encode through the pipeline's codec
CHILD = r"""
import sys
from pathlib import Path
import torch
from newbie.loading.vae import load_vae
from newbie.model.vae import LatentCodec

folder, single = Path(sys.argv[1]), Path(sys.argv[2])
a, b = LatentCodec(*load_vae(folder)), LatentCodec(*load_vae(single))
z = torch.randn(1, 16, 4, 5, generator=torch.Generator().manual_seed(0))
image = a.decode(z)
assert torch.equal(image, b.decode(z)) and image.shape == (1, 3, 32, 40)
assert torch.equal(a.encode(image), b.encode(image))
print(sorted(m for m in ("diffusers", "transformers", "accelerate") if m in sys.modules))
"""


def test_both_layouts_load_and_run_without_diffusers_or_transformers(tmp_path):
    folder = tmp_path / "vae"
    folder.mkdir()
    for f in ("config.json", "diffusion_pytorch_model.safetensors"):
        (folder / f).write_bytes((PACKAGED / "vae" / f).read_bytes())
    sd = load_vae(folder)[0].state_dict()
    single = tmp_path / "ae.safetensors"
    save_file(vae_bfl_keys(sd), str(single))
    (tmp_path / "ae.config.json").write_text((PACKAGED / "vae" / "config.json").read_text())
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), str(single)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_config_it_cannot_build_is_one_line(tmp_path):
    folder = tmp_path / "vae"
    folder.mkdir()
    raw = json.loads((PACKAGED / "vae" / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**raw, "norm_num_groups": 5}))
    weights = PACKAGED / "vae" / "diffusion_pytorch_model.safetensors"
    (folder / weights.name).write_bytes(weights.read_bytes())
    message = (
        rf"^{re.escape(str(folder / 'config.json'))}: VAE config: block_out_channels \[32, 64, 64, 64\] must be multiples "
        r"of norm_num_groups 5$"
    )
    with pytest.raises(CheckpointError, match=message):
        load_vae(folder)
    with pytest.raises(CheckpointError, match=message):
        check_vae(folder, read_headers(component_files(folder)))


def test_loaded_weights_are_the_files_in_eval_mode_without_grad():
    vae, cfg = load_vae(PACKAGED / "vae", torch.bfloat16)
    assert not vae.training and not any(p.requires_grad for p in vae.parameters())
    assert {p.dtype for p in vae.parameters()} == {torch.bfloat16} and {
        p.device.type for p in vae.parameters()
    } == {"cpu"}
    assert (cfg.latent_channels, cfg.scaling_factor, cfg.shift_factor, cfg.downscale) == (
        16,
        0.8446,
        0.076,
        8,
    )
    assert vae.config.block_out_channels == [32, 64, 64, 64]

"""A model's defaults come with it: its newbie_spec.json, else (a single file, a ComfyUI set) its shapes: the
demo's for a demo-width transformer, NewBie's for NewBie's width; which one is said. `newbie inspect` shows them."""

import json
import shutil

import pytest

import newbie
from newbie.cli.main import main
from newbie.config import SPECS
from newbie.errors import CheckpointError
from newbie.pipeline.model_spec import DEMO_SPEC, model_spec


@pytest.fixture
def single_file(tiny_model_dir, tmp_path):
    """The tiny transformer as one file (with its config sidecar), the other components as folders."""
    t = tmp_path / "t.safetensors"
    shutil.copy(tiny_model_dir / "transformer" / "diffusion_pytorch_model.safetensors", t)
    shutil.copy(tiny_model_dir / "transformer" / "config.json", tmp_path / "t.config.json")
    others = {k: tiny_model_dir / k for k in ("text_encoder", "clip_model", "vae")}
    return t, others


def test_a_demo_width_single_file_gets_the_demo_defaults_and_says_so(single_file):
    t, others = single_file
    pipe = newbie.load(t, device="cpu", dtype="fp32", **others)
    demo = json.loads(DEMO_SPEC.read_text())["sampling"]
    d = pipe.spec.sampling
    assert (d.width, d.height, d.steps, d.cfg, d.sampler, d.shift) == (
        demo["width"],
        demo["height"],
        demo["steps"],
        demo["cfg"],
        demo["sampler"],
        demo["shift"],
    )
    assert "t.safetensors: no newbie_spec.json; a 48-wide transformer" in pipe.notice
    assert "demo model's defaults: 128x128, 20 steps, cfg 4, euler, shift 3" in pipe.notice


def test_a_spec_beside_the_file_wins(single_file):
    t, others = single_file
    spec = {"max_side": 256, "sampling": {"width": 64, "height": 32, "steps": 3}}
    (t.parent / "t.newbie_spec.json").write_text(json.dumps(spec))
    pipe = newbie.load(t, device="cpu", dtype="fp32", **others)
    assert (pipe.spec.sampling.width, pipe.spec.sampling.height, pipe.spec.sampling.steps) == (64, 32, 3)
    assert pipe.spec.max_side == 256 and "newbie_spec" not in pipe.notice


def test_a_model_folder_without_a_spec_keeps_newbies_defaults_silently(tiny_model_dir):
    from newbie.loading.folder import locate

    base = SPECS["newbie-exp0.1"]
    spec, note = model_spec(locate(tiny_model_dir), base)
    assert spec is base and note == ""


def test_the_shape_mismatch_names_the_sidecar(single_file):
    t, others = single_file
    (t.parent / "t.config.json").unlink()
    with pytest.raises(
        CheckpointError, match=r"tensor shape mismatch: .*needs its config.json beside it as t\.config\.json"
    ):
        newbie.load(t, device="cpu", dtype="fp32", **others)


def test_inspect_prints_the_models_defaults(single_file, capsys):
    assert main(["inspect", "demo"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("defaults") and "128x128, 20 steps, cfg 4, euler, shift 3" in last
    assert last.endswith("demo_model/newbie_spec.json]")
    t, others = single_file
    argv = ["inspect", str(t)] + [f"--{k.replace('_', '-')}={v}" for k, v in others.items()]
    assert main(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "128x128, 20 steps" in last and "the demo model's (from the shapes)" in last

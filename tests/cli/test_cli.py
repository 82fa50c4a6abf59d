"""The CLI as a user meets it: one-line errors (exit 2 for bad input, 1 for a failed run), no traceback unless
--debug, no partial files."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image

from newbie.cli.main import main
from newbie.errors import NewbieError
from newbie.pipeline.timings import parse_timings
from newbie.sampling.samplers import SAMPLERS


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_writes_png_with_recipe_and_remakes_it_bit_for_bit(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "a.png"
    code, stdout, err = run(
        capsys,
        "generate",
        "1girl, red_hair",
        "--model",
        str(tiny_model_dir),
        "--seed",
        "5",
        "--steps",
        "2",
        "--size",
        "32x48",
        "--out",
        str(out),
        "--dtype",
        "fp32",
    )
    assert code == 0, err
    assert stdout.strip() == str(out)
    assert "it/s" in err and "ETA" in err
    # where the time went, one line the startup bench reads back: every phase up to the saved PNG
    times = parse_timings(err)
    assert set(times) == {f"{p}_s" for p in ("setup", "load", "encode", "denoise", "decode", "save", "total")}
    assert times["total_s"] >= times["load_s"] + times["denoise_s"]
    with Image.open(out) as im:
        rec = json.loads(im.info["newbie"])
        assert im.size == (32, 48)
    assert rec["seed"] == 5 and rec["steps"] == 2 and rec["width"] == 32 and rec["height"] == 48
    for key in ("prompt", "negative", "cfg", "sampler", "shift", "dtype", "model_hash", "version"):
        assert key in rec
    again = tmp_path / "b.png"
    code, _, err = run(
        capsys, "generate", "--from", str(out), "--model", str(tiny_model_dir), "--out", str(again)
    )
    assert code == 0, err
    assert again.read_bytes() == out.read_bytes()


def test_batch_and_prompt_file(tiny_model_dir, tmp_path, capsys):
    prompt = tmp_path / "p.txt"
    prompt.write_text("<character_1><gender>1girl</gender><position>left</position></character_1>\n")
    code, stdout, err = run(
        capsys,
        "generate",
        f"@{prompt}",
        "--model",
        str(tiny_model_dir),
        "--steps",
        "1",
        "--size",
        "32x32",
        "--batch",
        "2",
        "--out",
        str(tmp_path / "x.png"),
        "--quiet",
    )
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.glob("x-*.png")) == ["x-1.png", "x-2.png"]
    with Image.open(tmp_path / "x-2.png") as im:
        rec = json.loads(im.info["newbie"])
    assert rec["prompt"].startswith("<character_1>") and rec["batch_index"] == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--size", "100x64"], "width 100 is not a positive multiple of 16"),
        (["--steps", "0"], "steps must be between 1 and 1000, got 0"),
        (["--steps", "5.5"], "steps must be a whole number, got '5.5' (str)"),
        (["--sampler", "ddim"], f"unknown sampler 'ddim' (choose from {', '.join(SAMPLERS)})"),
        (["--shift", "-1"], "shift must be between 0.01 and 100, got -1"),
        (["--shift", "0"], "shift must be between 0.01 and 100, got 0"),
        (["--shift", "inf"], "shift must be a finite number, got inf"),
        (["--cfg", "1e308"], "cfg must be between 0 and 100, got 1e+308"),
        (["--cfg", "high"], "cfg must be a number, got 'high' (str)"),
        (["--cfg-trunc", "7"], "cfg_trunc must be between 0 and 1, got 7"),
        (["--renorm-cfg", "-3"], "renorm_cfg must be between 0 and 100, got -3"),
        (["--seed", "-1"], "seed must be between 0 and 18446744073709551615, got -1"),
        (["--batch", "0"], "batch must be between 1 and 64, got 0"),
        (["--size", "big"], "size must look like WIDTHxHEIGHT (e.g. 1024x1024) or 'auto', got 'big'"),
    ],
)
def test_bad_arguments(tiny_model_dir, tmp_path, capsys, monkeypatch, args, message):
    import newbie

    def no_loading(*a, **k):
        raise AssertionError("the model was loaded for a bad request")

    monkeypatch.setattr(newbie, "load", no_loading)  # every bad setting is refused before anything loads
    out = tmp_path / "o.png"
    code, _, err = run(capsys, "generate", "1girl", "--model", str(tiny_model_dir), "--out", str(out), *args)
    assert code == 2
    assert err.strip().splitlines()[-1] == f"error: {message}"
    assert "Traceback" not in err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_step_cache_auto_runs_and_a_bad_value_is_one_line(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "o.png"
    base = ["generate", "1girl", "--model", str(tiny_model_dir), "--size", "32x32", "--steps", "6", "--quiet"]
    with pytest.raises(SystemExit) as e:  # argparse's own exit for a bad flag value
        main([*base, "--out", str(out), "--step-cache", "fast"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--step-cache takes a threshold such as 0.05 or 'auto', not 'fast'" in err
    assert "Traceback" not in err and not out.exists()
    code, _, err = run(capsys, *base, "--out", str(out), "--step-cache", "auto")
    assert code == 0 and out.exists(), err


def test_missing_inputs(tmp_path, capsys):
    code, _, err = run(
        capsys, "generate", "x", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o.png")
    )
    assert code == 2 and "no such model folder" in err
    code, _, err = run(
        capsys, "generate", "@" + str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o.png")
    )
    assert code == 2 and "cannot read prompt file" in err
    code, _, err = run(capsys, "generate", "--from", str(tmp_path / "nope.png"))
    assert code == 2 and "no such image" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "generate", "x", "--model", str(empty))
    assert code == 2 and "no transformer/ folder" in err


def test_damaged_checkpoint_is_one_line(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    f = bad / "transformer" / "diffusion_pytorch_model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    code, _, err = run(capsys, "generate", "x", "--model", str(bad), "--out", str(tmp_path / "o.png"))
    assert code == 2 and "damaged safetensors file" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.png").exists()


def test_inspect_ok_and_damaged(tiny_model_dir, tmp_path, capsys):
    code, out, err = run(capsys, "inspect", str(tiny_model_dir))
    assert code == 0, err
    lines = out.strip().splitlines()
    assert [line.split()[0] for line in lines] == [
        "transformer",
        "text_encoder",
        "clip_model",
        "vae",
        "defaults",
    ]
    assert all("keys ok" in line for line in lines[:4])
    assert lines[4].endswith("[newbie-exp0.1]")  # a folder without newbie_spec.json: NewBie's defaults
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    from safetensors.torch import load_file, save_file

    path = bad / "clip_model" / "model.safetensors"
    sd = load_file(str(path))
    victim = next(k for k in sd if "layers.1.mlp.fc2.bias" in k)
    del sd[victim]
    save_file(sd, str(path))
    shutil.rmtree(bad / "vae")
    code, out, err = run(capsys, "inspect", str(bad))
    assert code == 2
    assert "vae           absent" in out
    assert "clip_model" in err and "layers.1.mlp.fc2.bias" in err


def test_console_script_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "newbie", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "generate" in r.stdout and "inspect" in r.stdout


def test_make_demo_command_works(tmp_path, capsys):
    """The README's main job: the exact `make demo` command line (fewer steps) on the embedded demo model."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    line = next(ln for ln in (root / "Makefile").read_text().splitlines() if "newbie generate" in ln)
    args = line.split("newbie", 1)[1].split()
    assert args[0] == "generate" and args[1].startswith("@")
    args[1] = "@" + str(root / args[1][1:])
    out = tmp_path / "demo.png"
    args[args.index("--out") + 1] = str(out)
    code, stdout, err = run(capsys, *args, "--steps", "2")
    assert code == 0, err
    assert "toy demo model" in err and out.is_file()
    with Image.open(out) as im:
        assert json.loads(im.info["newbie"])["prompt"].startswith("<character_1>")
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)


GENERATE_FAILURES = [
    (
        NewbieError("width 100 is not a positive multiple of 16"),
        2,
        "error: width 100 is not a positive multiple of 16",
    ),
    (
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        1,
        "error: out of GPU memory at 32x48: try --vram",
    ),
    (
        RuntimeError(
            "Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu!"
        ),
        1,
        "error: internal device/dtype mismatch (Expected all tensors to be on the same device",
    ),
    (
        RuntimeError(
            "Input type (torch.cuda.FloatTensor) and weight type (torch.FloatTensor) should be the same"
        ),
        1,
        "error: internal device/dtype mismatch (Input type",
    ),
    (ValueError("boom"), 1, "error: generation failed: ValueError: boom (run again with --debug"),
    (KeyboardInterrupt(), 130, "interrupted"),
]


def _generate_failing(monkeypatch, capsys, tiny_model_dir, tmp_path, error, before=(), after=()):
    from newbie.pipeline.pipeline import Pipeline

    def fail(self, req, progress=None):
        raise error

    monkeypatch.setattr(Pipeline, "run", fail)
    out = tmp_path / "o.png"
    code, _, err = run(
        capsys,
        *before,
        "generate",
        "1girl",
        "--model",
        str(tiny_model_dir),
        "--size",
        "32x48",
        "--steps",
        "1",
        "--quiet",
        "--out",
        str(out),
        *after,
    )
    assert not out.exists()
    return code, err


@pytest.mark.parametrize(
    "error, exit_code, line",
    GENERATE_FAILURES,
    ids=["bad-input", "out-of-memory", "device", "weight-type", "other", "ctrl-c"],
)
def test_a_failed_generate_is_one_line_without_traceback(
    tiny_model_dir, tmp_path, capsys, monkeypatch, error, exit_code, line
):
    monkeypatch.setenv("NEWBIE_DEBUG", "0")  # also undoes what --debug sets
    code, err = _generate_failing(monkeypatch, capsys, tiny_model_dir, tmp_path, error)
    assert code == exit_code
    assert len(err.strip().splitlines()) == 1 and err.startswith(line), err
    assert "Traceback" not in err


@pytest.mark.parametrize("how", ["--debug first", "--debug last", "NEWBIE_DEBUG=1"])
def test_debug_shows_the_traceback_then_the_same_line(tiny_model_dir, tmp_path, capsys, monkeypatch, how):
    monkeypatch.setenv("NEWBIE_DEBUG", "0")  # also undoes what --debug sets
    if how == "NEWBIE_DEBUG=1":
        monkeypatch.setenv("NEWBIE_DEBUG", "1")
    error, exit_code, line = GENERATE_FAILURES[2]
    code, err = _generate_failing(
        monkeypatch,
        capsys,
        tiny_model_dir,
        tmp_path,
        error,
        before=["--debug"] if how == "--debug first" else [],
        after=["--debug"] if how == "--debug last" else [],
    )
    assert code == exit_code
    assert err.startswith("Traceback (most recent call last)") and "raise error" in err
    assert err.strip().splitlines()[-1].startswith(line)

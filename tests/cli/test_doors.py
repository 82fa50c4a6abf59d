"""Issue 24, the doors a careful user walks through: bad input refused before any weights load, outputs never
overwritten, `--from` with flags changes the recipe, the recipe's component hashes guard `--from`, one XML rule,
`--version`, bare `newbie`, `--model demo`, a bare FILE prompt."""

import json

import pytest
from PIL import Image

import newbie
from newbie.cli.main import main
from newbie.errors import NewbieError

TINY = ("--steps", "1", "--size", "32x32", "--dtype", "fp32")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def recipe_of(path):
    with Image.open(path) as im:
        return json.loads(im.info["newbie"])


@pytest.fixture
def no_load(monkeypatch):
    """Fails the test if anything loads weights: these checks must come first."""

    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(newbie, "load", refuse)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["<character_1><n>x</character_1>"], "prompt is not valid XML: line 1, column 14"),
        (["1girl", "--negative", "<a><b></a>"], "negative prompt is not valid XML"),
        (["@{tmp}/missing.txt"], "cannot read prompt file"),
        (["1girl", "--device", "tpu"], "unknown device 'tpu'"),
        (["1girl", "--steps", "0"], "steps must be between 1 and 1000, got 0"),
        (["1girl", "--cfg", "-1"], "cfg must be between 0 and 100, got -1"),
        (["1girl", "--seed", "-5"], "seed must be between 0 and 18446744073709551615, got -5"),
        (["1girl", "--sampler", "foo"], "unknown sampler 'foo'"),
        (["1girl", "--size", "100x100"], "width 100 is not a positive multiple of 16"),
        (["1girl", "--batch", "0"], "batch must be between 1 and 64, got 0"),
        (["1girl", "--out", "{tmp}/a_file/x.png"], "{tmp}/a_file' is a file, not a folder"),
        (["1girl", "--out", "{tmp}/x.jpg"], "--out must be a .png path or a folder"),
        (["1girl", "--lora", "{tmp}/nope.safetensors:0.5"], "no such file or folder"),
        (["1girl", "--init-image", "{tmp}/nope.png"], "--init-image {tmp}/nope.png: no such image"),
        (
            ["1girl", "--init-image", "{tmp}/a_file", "--mask", "{tmp}/m.png"],
            "--mask {tmp}/m.png: no such image",
        ),
    ],
)
def test_bad_input_is_refused_before_loading_in_one_line(tmp_path, capsys, no_load, argv, message):
    (tmp_path / "a_file").write_text("not a folder")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, out, err = run(capsys, "generate", *argv)
    assert code == 2
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert message.replace("{tmp}", str(tmp_path)) in err
    assert out == "" and "please report" not in err


def test_a_write_failure_is_the_users_not_a_bug(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import newbie.pipeline.images as images

    def disk_full(image, recipe, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(images, "save_png", disk_full)
    code, _, err = run(
        capsys, "generate", "1girl", "--model", str(tiny_model_dir), *TINY, "--out", str(tmp_path) + "/"
    )
    assert code == 2
    assert "cannot write the image (No space left on device)" in err and "please report" not in err


def test_outputs_are_numbered_never_overwritten_and_the_seed_is_printed(
    tiny_model_dir, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    seen = []
    for extra in ((), ("--batch", "2")):
        code, out, err = run(capsys, "generate", "1girl", "--model", str(tiny_model_dir), *TINY, *extra)
        assert code == 0, err
        seen += out.split()
        for path in out.split():
            assert f"seed {recipe_of(path)['seed']} -> {path}" in err
    assert seen == [f"outputs/newbie_0000{i}.png" for i in (1, 2, 3)]
    # a folder given as --out numbers too; a file named by --out is the user's choice
    code, out, _ = run(capsys, "generate", "1girl", "--model", str(tiny_model_dir), *TINY, "--out", "mine/")
    assert out.split() == ["mine/newbie_00001.png"]
    code, out, _ = run(capsys, "generate", "1girl", "--model", str(tiny_model_dir), *TINY, "--out", "x.png")
    assert out.split() == ["x.png"]


def test_from_with_flags_is_this_recipe_changed_so(tiny_model_dir, tmp_path, capsys):
    first = tmp_path / "first.png"
    base = ("--model", str(tiny_model_dir), "--dtype", "fp32")
    code, _, err = run(
        capsys,
        "generate",
        "1girl",
        *base,
        "--seed",
        "5",
        "--steps",
        "2",
        "--size",
        "32x48",
        "--out",
        str(first),
    )
    assert code == 0, err
    changes = {
        ("--seed", "7"): {"seed": 7},
        ("--steps", "3"): {"steps": 3},
        ("--size", "48x32"): {"width": 48, "height": 32},
        ("--cfg", "2.5", "--sampler", "euler"): {"cfg": 2.5, "sampler": "euler"},
    }
    before = recipe_of(first)
    for flags, changed in changes.items():
        out = tmp_path / "changed.png"
        code, _, err = run(
            capsys, "generate", "--from", str(first), *base, *flags, "--out", str(out), "--quiet"
        )
        assert code == 0, err
        after = recipe_of(out)
        for key in ("prompt", "seed", "steps", "cfg", "sampler", "width", "height", "shift", "negative"):
            assert after[key] == changed.get(key, before[key]), (flags, key)
    out = tmp_path / "prompt.png"
    code, _, err = run(
        capsys, "generate", "2girls", "--from", str(first), *base, "--out", str(out), "--quiet"
    )
    assert recipe_of(out)["prompt"] == "2girls" and recipe_of(out)["seed"] == 5
    # and without flags: the same image, bit for bit
    code, _, err = run(capsys, "generate", "--from", str(first), *base, "--out", str(tmp_path / "same.png"))
    assert (tmp_path / "same.png").read_bytes() == first.read_bytes()


def test_from_refuses_another_model_unless_allowed(tiny_model_dir, tmp_path, capsys, no_load):
    """The recipe names its four components by hash; --from without --model (the demo) refuses before loading."""
    from newbie.loading.folder import locate
    from newbie.loading.hashing import component_hashes
    from newbie.pipeline.images import save_png
    from newbie.pipeline.recipe import Recipe

    hashes = component_hashes(locate(tiny_model_dir))
    assert sorted(hashes) == ["clip_model", "text_encoder", "transformer", "vae"]
    recipe = Recipe(
        prompt="1girl",
        negative="",
        seed=1,
        steps=1,
        cfg=1.0,
        sampler="euler",
        shift=3.0,
        width=32,
        height=32,
        cfg_trunc=1.0,
        renorm_cfg=0.0,
        dtype="fp32",
        text_dtype="fp32",
        vae_dtype="fp32",
        device="cpu",
        model="model",
        model_hash=hashes["transformer"],
        version="0",
        components=hashes,
    )
    png = save_png(Image.new("RGB", (32, 32)), recipe, tmp_path / "r.png")
    code, _, err = run(capsys, "generate", "--from", str(png), "--out", str(tmp_path / "o.png"))
    assert code == 2
    assert (
        "made with another transformer, vae than this model's (demo_model)" in err
        and "--allow-other-model" in err
    )
    # only the VAE differs: named alone
    recipe.components = {**hashes, "vae": "0" * 64}
    png = save_png(Image.new("RGB", (32, 32)), recipe, tmp_path / "r.png")
    code, _, err = run(capsys, "generate", "--from", str(png), "--model", str(tiny_model_dir))
    assert code == 2 and "made with another vae than" in err


def test_from_with_allow_other_model_remakes_on_the_loaded_one(tiny_model_dir, tmp_path, capsys):
    first = tmp_path / "first.png"
    code, _, err = run(
        capsys, "generate", "1girl", "--model", str(tiny_model_dir), *TINY, "--out", str(first)
    )
    assert code == 0, err
    assert set(recipe_of(first)["components"]) == {"transformer", "text_encoder", "clip_model", "vae"}
    out = tmp_path / "demo.png"
    code, _, err = run(
        capsys, "generate", "--from", str(first), "--model", "demo", "--allow-other-model", "--out", str(out)
    )
    assert code == 0, err
    assert "warning: the image was made with another transformer" in err
    assert recipe_of(out)["model"] == "demo_model"


def test_version_and_bare_newbie(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"newbie {newbie.__version__}"
    code, out, err = run(capsys)
    assert code == 0 and out.startswith("usage: newbie") and "generate" in out and err == ""


def test_model_demo_means_the_demo_model(tmp_path, capsys):
    out = tmp_path / "d.png"
    code, stdout, err = run(
        capsys, "generate", "1girl", "--model", "demo", "--steps", "1", "--size", "64x64", "--out", str(out)
    )
    assert code == 0, err
    assert recipe_of(out)["model"] == "demo_model"
    code, stdout, err = run(capsys, "inspect", "demo")
    assert code == 0 and "transformer" in stdout


def test_a_bare_file_prompt_is_read_as_by_prompt_check(tmp_path, capsys, monkeypatch, tiny_model_dir):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.xml").write_text("<character_1><n>x</character_1>\n")
    code, _, err = run(capsys, "prompt", "check", "p.xml")
    assert code == 2 and "not closed" in err
    code, _, err = run(capsys, "generate", "p.xml", "--model", str(tiny_model_dir))
    assert code == 2 and "prompt is not valid XML" in err
    (tmp_path / "p.txt").write_text("1girl, red_hair\n")
    code, out, err = run(capsys, "generate", "p.txt", "--model", str(tiny_model_dir), *TINY, "--quiet")
    assert code == 0, err and recipe_of(out.strip())["prompt"] == "1girl, red_hair"


def test_one_xml_rule_in_the_python_api(tiny_pipeline):
    with pytest.raises(NewbieError, match=r"^prompt is not valid XML: line 1, column 14: "):
        tiny_pipeline.request("<character_1><n>x</character_1>")
    with pytest.raises(NewbieError, match=r"^negative prompt is not valid XML"):
        tiny_pipeline.request("1girl", negative="<a>")
    assert tiny_pipeline.request("1girl, <3 smile").prompts == ["1girl, <3 smile"]  # text, not XML

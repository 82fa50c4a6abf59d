"""`newbie convert MODEL --to folder|comfy OUT` writes every layout we read: the converted model makes the same
image, bit for bit, and keeps its sampling defaults."""

import pytest

import newbie
from newbie.cli.main import main
from newbie.demo.model import PACKAGED
from tests.loading import comfy_files as cf

SETTINGS = dict(seed=3, steps=2)  # the size and the rest: the model's own defaults, which must travel


def _image(pipe):
    return pipe.generate("1girl, red_hair", **SETTINGS).images[0].tobytes()


def test_demo_to_folder_makes_the_same_image_with_the_same_defaults(tmp_path, capsys):
    out = tmp_path / "folder"
    assert main(["convert", "demo", "--to", "folder", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    demo = newbie.load(device="cpu")
    again = newbie.load(out, device="cpu")
    assert again.spec == demo.spec and again.dtypes == demo.dtypes
    assert _image(again) == _image(demo)
    assert again.component_hashes["transformer"] == demo.component_hashes["transformer"]  # same bytes, bf16


@pytest.fixture(scope="module")
def spiece_folder(tmp_path_factory):
    """The demo model with SentencePiece tokenizers (a ComfyUI file embeds one; the demo's are word-level)."""
    root = tmp_path_factory.mktemp("spiece")
    g, x = cf.gemma_spiece(), cf.xlmr_spiece()
    hf_g, hf_j = cf.hf_tokenizers(g, x, root / "hf")
    folder = cf.folder_with_tokenizers(PACKAGED, root / "folder", hf_g, hf_j)
    # as the real repositories ship them beside tokenizer.json: what the ComfyUI files embed
    (folder / "text_encoder" / "tokenizer.model").write_bytes(g)
    (folder / "clip_model" / "sentencepiece.bpe.model").write_bytes(x)
    return folder


def test_folder_to_comfy_and_back_make_the_same_image(spiece_folder, tmp_path, capsys):
    models = tmp_path / "models"
    assert main(["convert", str(spiece_folder), "--to", "comfy", str(models)]) == 0
    names = sorted(str(p.relative_to(models)) for p in models.rglob("*.safetensors"))
    assert names == [
        "diffusion_models/NewBie-Image-Exp0.1-bf16.safetensors",
        "text_encoders/gemma_3_4b_it_bf16.safetensors",
        "text_encoders/jina_clip_v2_bf16.safetensors",
        "vae/ae.safetensors",
    ]
    source = newbie.load(spiece_folder, device="cpu")
    comfy = newbie.load(comfy_dir=models, device="cpu")
    assert comfy.spec == source.spec  # the defaults travel beside the transformer file
    assert _image(comfy) == _image(source)
    back = tmp_path / "back"  # the embedded SentencePiece models become tokenizer folders
    assert main(["convert", str(models), "--to", "folder", str(back)]) == 0
    assert _image(newbie.load(back, device="cpu")) == _image(source)


def test_refusals_are_one_line(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert main(["convert", "demo", "--to", "folder", str(tmp_path / "full")]) == 2
    assert "already exists and is not an empty folder" in capsys.readouterr().err
    assert main(["convert", "demo", "--to", "comfy", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the ComfyUI layout embeds each text encoder's SentencePiece model")
    assert not (tmp_path / "c").exists()


def test_demo_to_diffusers_uses_diffusers_names_and_makes_the_same_image(tmp_path, capsys):
    from newbie.loading.dit import is_diffusers_layout
    from newbie.loading.safetensors_io import read_header

    out = tmp_path / "diffusers"
    assert main(["convert", "demo", "--to", "diffusers", str(out)]) == 0
    keys = read_header(out / "transformer" / "diffusion_pytorch_model.safetensors")
    assert (
        is_diffusers_layout(keys)
        and "layers.0.attn.to_k.weight" in keys
        and "layers.0.norm1.norm.weight" in keys
    )
    assert "context_refiner.0.norm1.weight" in keys and not any(".attention." in k for k in keys)
    assert (out / "text_encoder_2").is_dir() and (out / "tokenizer_2" / "tokenizer.json").is_file()
    again = newbie.load(out, device="cpu")
    assert again.spec == newbie.load(device="cpu").spec
    assert _image(again) == _image(newbie.load(device="cpu"))

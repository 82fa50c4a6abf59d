"""ComfyUI single files: the demo model rewritten in the ComfyUI layout loads through newbie.load() and the
CLI and makes the same images, bit for bit, as the folder layout with the same tokenizers; damaged files are
refused with the key named; the key maps hold at full size (checked on shapes alone).

Tokenization: the demo folder's own tokenizers are word-level HF tokenizers, which no SentencePiece model can
reproduce, so both layouts here use one tiny SentencePiece model per encoder, trained in the test: the ComfyUI
files embed it (`spiece_model`), the folder gets HF's tokenizers converted from the same model
(test_comfy_tokenizers.py shows the ids equal). Same weights + same ids -> identical images is then the claim.
"""

import shutil

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import newbie
from newbie.cli.main import main
from newbie.demo.model import PACKAGED
from newbie.errors import CheckpointError, NewbieError
from newbie.loading import comfy
from newbie.loading.folder import locate
from newbie.loading.safetensors_io import read_header
from newbie.loading.text import check_gemma, check_jina, load_gemma, load_tokenizer
from newbie.loading.vae import check_vae, load_vae
from newbie.model.autoencoder import AutoencoderConfig, AutoencoderKL
from tests.loading import comfy_files as cf

# every sampling setting given: a ComfyUI folder has no newbie_spec.json, so defaults would differ by layout
SETTINGS = {
    "seed": 7,
    "steps": 2,
    "width": 32,
    "height": 32,
    "cfg": 4.0,
    "shift": 3.0,
    "sampler": "euler",
    "cfg_trunc": 1.0,
    "renorm_cfg": 0.0,
}
CLI_SETTINGS = [
    "--seed",
    "7",
    "--steps",
    "2",
    "--size",
    "32x32",
    "--cfg",
    "4",
    "--shift",
    "3",
    "--sampler",
    "euler",
    "--cfg-trunc",
    "1",
    "--renorm-cfg",
    "0",
    "--dtype",
    "fp32",
    "--device",
    "cpu",
]
PROMPT = "<character_1> <gender>1girl</gender> <appearance>red_hair, blue_eyes</appearance> </character_1>"


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("comfy")
    g, x = cf.gemma_spiece(), cf.xlmr_spiece()
    hf_g, hf_j = cf.hf_tokenizers(g, x, root / "hf")
    folder = cf.folder_with_tokenizers(PACKAGED, root / "folder", hf_g, hf_j)
    files = cf.write_comfy_models(PACKAGED, root / "models", g, cf.xlmr_spiece_hf_numbered(x))
    return folder, root / "models", files


@pytest.fixture(scope="module")
def folder_image(layouts):
    pipe = newbie.load(layouts[0], device="cpu", dtype="fp32")
    return pipe.generate(PROMPT, **SETTINGS)


def _pixels(path):
    with Image.open(path) as im:
        return im.convert("RGB").tobytes()


def test_load_api_single_files_and_comfy_dir_match_the_folder_bit_for_bit(layouts, folder_image):
    _, models, files = layouts
    pipe = newbie.load(comfy_dir=models, device="cpu", dtype="fp32")
    assert "transformer: took diffusion_models/NewBie-Image-Exp0.1-bf16.safetensors" in pipe.notice
    assert "vae: took vae/ae.safetensors" in pipe.notice
    gen = pipe.generate(PROMPT, **SETTINGS)
    assert torch.equal(gen.latents, folder_image.latents)
    assert gen.images[0].tobytes() == folder_image.images[0].tobytes()
    # the four files named one by one: the same model
    pipe2 = newbie.load(
        files["transformer"],
        text_encoder=files["text_encoder"],
        clip_model=files["clip_model"],
        vae=files["vae"],
        device="cpu",
        dtype="fp32",
    )
    # no spec beside the file: the defaults come from its shapes, and the notice says which (issue 24)
    assert pipe2.notice == (
        "NewBie-Image-Exp0.1-bf16.safetensors: no newbie_spec.json; a 192-wide transformer (NewBie Exp0.1's "
        "is 2304) gets the demo model's defaults: 128x128, 20 steps, cfg 4, euler, shift 3, cfg-trunc 1, "
        "renorm-cfg 0"
    )
    for a, b in (
        (pipe.dit, pipe2.dit),
        (pipe.text.gemma, pipe2.text.gemma),
        (pipe.codec.vae, pipe2.codec.vae),
    ):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_cli_single_files_and_comfy_dir_match_the_folder(layouts, folder_image, tmp_path, capsys):
    _, models, files = layouts
    out = tmp_path / "files.png"
    code = main(
        [
            "generate",
            PROMPT,
            "--model",
            str(files["transformer"]),
            "--text-encoder",
            str(files["text_encoder"]),
            "--clip-model",
            str(files["clip_model"]),
            "--vae",
            str(files["vae"]),
            "--out",
            str(out),
            *CLI_SETTINGS,
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert _pixels(out) == folder_image.images[0].convert("RGB").tobytes()
    out2 = tmp_path / "dir.png"
    code = main(["generate", PROMPT, "--comfy-dir", str(models), "--out", str(out2), *CLI_SETTINGS])
    err = capsys.readouterr().err
    assert code == 0, err
    assert (
        "text_encoder: took text_encoders/gemma_3_4b_it_bf16.safetensors" in err
    )  # it says which files it took
    assert _pixels(out2) == _pixels(out)


def test_inspect_names_each_format(layouts, capsys):
    folder, models, _ = layouts
    assert main(["inspect", "--comfy-dir", str(models)]) == 0
    out = capsys.readouterr().out
    for line, fmt in zip(out.strip().splitlines(), ("nextdit", "comfy-gemma3", "comfy-jina", "bfl-vae")):
        assert "keys ok" in line and f"[{comfy.FORMATS[fmt]}]" in line, line
    assert out.strip().splitlines()[-1].startswith("defaults ")  # the model's own, last (issue 24)
    assert main(["inspect", str(folder)]) == 0
    *components, defaults = capsys.readouterr().out.strip().splitlines()
    assert all(f"[{comfy.FORMATS['folder']}]" in line for line in components) and len(components) == 4
    assert defaults.startswith("defaults ")


def test_prefixed_dit_and_file_search(layouts, tmp_path):
    """ComfyUI may save the DiT under model.diffusion_model.; a models/ folder may use older subfolder names
    and other file names (the usual name wins, then a pattern; the note says what else matched)."""
    models = tmp_path / "models"
    files = cf.write_comfy_models(
        PACKAGED, models, cf.gemma_spiece(), cf.xlmr_spiece(), dit_prefix="model.diffusion_model."
    )
    assert comfy.file_format(read_header(files["transformer"])) == "nextdit-prefixed"
    (models / "diffusion_models").rename(models / "unet")
    unet = models / "unet"
    shutil.copy(unet / "NewBie-Image-Exp0.1-bf16.safetensors", unet / "newbie_fp8_copy.safetensors")
    found, notes = comfy.find_comfy_files(models)
    assert found["transformer"] == unet / "NewBie-Image-Exp0.1-bf16.safetensors"
    (unet / "NewBie-Image-Exp0.1-bf16.safetensors").rename(unet / "NewBie-exp0.1.safetensors")
    (unet / "NewBie-Image-Exp0.1-bf16.config.json").rename(unet / "NewBie-exp0.1.config.json")
    found, notes = comfy.find_comfy_files(models)
    assert found["transformer"] == unet / "NewBie-exp0.1.safetensors"
    assert "also matched: newbie_fp8_copy.safetensors" in notes["transformer"]
    (unet / "newbie_fp8_copy.safetensors").unlink()
    # the original XLM-R numbering in the Jina file loads too; the model path may be the models/ folder itself
    pipe = newbie.load(models, device="cpu", dtype="fp32")
    assert pipe.folder.transformer == unet / "NewBie-exp0.1.safetensors"
    folder_jina = load_tokenizer([layouts[0] / "clip_model"], "Jina")  # HF's ids for the same model
    assert pipe.text.jina_tokenizer(PROMPT)["input_ids"] == folder_jina(PROMPT)["input_ids"]
    # explicit components win over the folder's; a folder lacking one says what it looked for
    (models / "vae" / "ae.safetensors").rename(tmp_path / "elsewhere.safetensors")
    (models / "vae" / "ae.config.json").rename(tmp_path / "elsewhere.config.json")
    with pytest.raises(NewbieError, match=r"no vae file in vae/ \(looked for ae.safetensors"):
        locate(None, comfy_dir=models)
    folder = locate(None, vae=tmp_path / "elsewhere.safetensors", comfy_dir=models)
    assert folder.vae == tmp_path / "elsewhere.safetensors" and not any(
        n.startswith("vae") for n in folder.notes
    )
    with pytest.raises(NewbieError, match="not a ComfyUI models folder"):
        comfy.find_comfy_files(tmp_path / "models" / "unet")


def _damage(path, key, tensor=None):
    sd = load_file(str(path))
    assert key in sd
    if tensor is None:
        del sd[key]
    else:
        sd[key] = tensor
    save_file(sd, str(path))


@pytest.mark.parametrize(
    "component,key,replacement,message",
    [
        (
            "text_encoder",
            "model.layers.1.mlp.down_proj.weight",
            None,
            "missing 1: layers.1.mlp.down_proj.weight",
        ),
        ("clip_model", "model.encoder.layers.1.mlp.fc2.bias", None, "missing 1: layers.1.mlp.fc2.bias"),
        ("clip_model", "spiece_model", None, "no 'spiece_model' tensor"),
        (
            "text_encoder",
            "spiece_model",
            torch.arange(64, dtype=torch.uint8),
            "'spiece_model' is not a SentencePiece model",
        ),
        ("vae", "decoder.up.0.block.1.conv2.weight", None, "missing 1: decoder.up.0.block.1.conv2.weight"),
        (
            "vae",
            "encoder.mid.attn_1.q.weight",
            torch.zeros(8, 8, 1, 1),
            "encoder.mid.attn_1.q.weight [8, 8, 1, 1]",
        ),
        (
            "transformer",
            "layers.3.attention.qkv.weight",
            None,
            "missing 1 key(s): layers.3.attention.qkv.weight",
        ),
    ],
)
def test_damaged_files_are_refused_with_the_key_named(
    layouts, tmp_path, capsys, component, key, replacement, message
):
    models = tmp_path / "models"
    shutil.copytree(layouts[1], models)
    _damage(models / layouts[2][component].relative_to(layouts[1]), key, replacement)
    code = main(
        ["generate", "x", "--comfy-dir", str(models), "--out", str(tmp_path / "o.png"), *CLI_SETTINGS]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "o.png").exists()
    if key != "spiece_model":  # inspect checks weights from headers alone (tokenizers load with the model)
        assert main(["inspect", "--comfy-dir", str(models)]) == 2
        assert message in capsys.readouterr().err


def test_vae_key_map_agrees_with_diffusers_converter():
    """Our BFL -> diffusers names against diffusers' own convert_ldm_vae_checkpoint, on the demo VAE."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    sd = load_file(str(PACKAGED / "vae" / "diffusion_pytorch_model.safetensors"))
    bfl = cf.vae_to_bfl(sd)
    assert comfy.is_bfl_vae(bfl) and not comfy.is_bfl_vae(sd)
    theirs = convert_ldm_vae_checkpoint(bfl, cf.read_json(PACKAGED / "vae" / "config.json"))
    names = comfy.bfl_vae_names(bfl)
    ours = {names[k]: v.reshape(comfy.bfl_attention_shape(k, tuple(v.shape))) for k, v in bfl.items()}
    assert ours.keys() == theirs.keys() == sd.keys()
    assert all(
        torch.equal(ours[k], theirs[k].reshape(ours[k].shape)) and torch.equal(ours[k], sd[k]) for k in sd
    )


def test_vae_file_without_sidecar_is_the_flux_vae(tmp_path):
    """ae.safetensors (no config beside it) is read as the FLUX.1 VAE: the full-size key set passes the
    checks, and decoding uses FLUX's scaling/shift."""
    cfg, src = comfy.vae_config_for_file(tmp_path / "ae.safetensors")
    assert (
        src == comfy.FLUX_VAE_CONFIG
        and cfg["latent_channels"] == 16
        and cfg["block_out_channels"] == [128, 256, 512, 512]
    )
    with torch.device("meta"):
        flux = AutoencoderKL(AutoencoderConfig.from_dict(cfg))
    n_up = len(cfg["up_block_types"])
    headers = {}
    for k, v in flux.state_dict().items():
        name = comfy.diffusers_vae_key(k, n_up)
        shape = (
            (*v.shape, 1, 1)
            if name.endswith(
                ("attn_1.q.weight", "attn_1.k.weight", "attn_1.v.weight", "attn_1.proj_out.weight")
            )
            else tuple(v.shape)
        )
        headers[name] = {"dtype": "F32", "shape": shape}
    assert "encoder.down.0.block.0.norm1.weight" in headers and "decoder.up.3.upsample.conv.weight" in headers
    assert "encoder.mid.attn_1.proj_out.weight" in headers and comfy.file_format(headers) == "bfl-vae"
    (tmp_path / "ae.safetensors").touch()
    check_vae(tmp_path / "ae.safetensors", headers)
    headers["decoder.up.1.block.2.nin_shortcut.weight"] = {"dtype": "F32", "shape": (4, 4, 1, 1)}
    with pytest.raises(CheckpointError, match="unexpected 1: decoder.up.1.block.2.nin_shortcut.weight"):
        check_vae(tmp_path / "ae.safetensors", headers)
    # a tiny file loads (its own sidecar config): scaling and shift come from there
    small = cf.vae_to_bfl(load_file(str(PACKAGED / "vae" / "diffusion_pytorch_model.safetensors")))
    save_file(small, str(tmp_path / "tiny.safetensors"))
    shutil.copy(PACKAGED / "vae" / "config.json", tmp_path / "tiny.config.json")
    _, vcfg = load_vae(tmp_path / "tiny.safetensors")
    assert (vcfg.scaling_factor, vcfg.shift_factor) == (0.8446, 0.076)


def test_text_files_without_sidecar_are_gemma3_4b_and_jina_v2(tmp_path):
    """The configs a ComfyUI text-encoder file leaves out: Gemma3-4B-it's and Jina CLIP v2's, widths from the
    shapes. Checked at full size on shapes alone."""
    from transformers import Gemma3TextConfig, Gemma3TextModel

    from newbie.loading.strict import build_empty
    from newbie.loading.text import gemma_text_config, jina_config
    from newbie.model.jina import JinaConfig, JinaTextModel

    real = Gemma3TextConfig(
        vocab_size=262208,
        hidden_size=2560,
        intermediate_size=10240,
        num_hidden_layers=34,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=256,
    )
    model = build_empty(lambda: Gemma3TextModel(real), "meta")
    headers = {
        "model." + k: {"dtype": "BF16", "shape": tuple(v.shape)} for k, v in model.state_dict().items()
    }
    headers["spiece_model"] = {"dtype": "U8", "shape": (4_000_000,)}
    headers["vision_model.embeddings.patch_embedding.weight"] = {"dtype": "BF16", "shape": (1152, 3, 14, 14)}
    assert comfy.file_format(headers) == "comfy-gemma3"
    (tmp_path / "gemma.safetensors").touch()
    cfg = gemma_text_config(tmp_path / "gemma.safetensors", headers, "model.")
    assert (
        cfg.num_hidden_layers,
        cfg.hidden_size,
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim,
        cfg.intermediate_size,
        cfg.vocab_size,
        cfg.sliding_window,
        cfg.query_pre_attn_scalar,
    ) == (34, 2560, 8, 4, 256, 10240, 262208, 1024, 256)
    assert cfg.layer_types[:6] == ["sliding_attention"] * 5 + ["full_attention"]
    assert cfg.rope_parameters["full_attention"] == {
        "rope_type": "linear",
        "factor": 8.0,
        "rope_theta": 1000000.0,
    }
    check_gemma(tmp_path / "gemma.safetensors", headers)
    del headers["model.layers.33.mlp.up_proj.weight"]
    with pytest.raises(CheckpointError, match="layers.33.mlp.up_proj.weight"):
        check_gemma(tmp_path / "gemma.safetensors", headers)

    with torch.device("meta"):
        jmodel = JinaTextModel(JinaConfig())
    jheaders = {
        "model." + k: {"dtype": "BF16", "shape": tuple(v.shape)}
        for k, v in cf.native_to_comfy_jina(jmodel).items()
    }
    jheaders["spiece_model"] = {"dtype": "U8", "shape": (5_000_000,)}
    assert comfy.file_format(jheaders) == "comfy-jina"
    assert jheaders["model.embeddings.word_embeddings.weight"]["shape"] == (250002, 1024)
    (tmp_path / "jina.safetensors").touch()
    jcfg = jina_config(tmp_path / "jina.safetensors", jheaders, "model.")
    assert (
        jcfg.num_hidden_layers,
        jcfg.hidden_size,
        jcfg.num_attention_heads,
        jcfg.intermediate_size,
        jcfg.rope_theta,
        jcfg.pad_token_id,
    ) == (24, 1024, 16, 4096, 20000.0, 1)
    check_jina(tmp_path / "jina.safetensors", jheaders)


def test_gemma_file_loads_without_sidecar_and_matches(tmp_path, layouts):
    """The tiny Gemma as a bare ComfyUI file (no config beside it): widths from the shapes, same outputs."""
    f = layouts[2]["text_encoder"]
    shutil.copy(f, tmp_path / "g.safetensors")
    with_side = load_gemma(f, torch.float32)
    bare = load_gemma(tmp_path / "g.safetensors", torch.float32)
    assert bare.config.hidden_size == with_side.config.hidden_size and bare.config.sliding_window == 1024
    ids = torch.tensor([[2, 10, 11, 12]])
    assert torch.equal(bare(input_ids=ids), with_side(input_ids=ids))


def test_ui_and_serve_take_a_comfy_dir(layouts, tmp_path):
    from newbie.cli.main import build_parser
    from newbie.cli.model_args import load_kwargs
    from newbie.cli.serve import limits_from
    from newbie.cli.ui import streamlit_command
    from newbie.serve.local import local_service

    _, models, _ = layouts
    _, env = streamlit_command(
        build_parser().parse_args(["ui", "--comfy-dir", str(models), "--data-dir", str(tmp_path / "g")])
    )
    assert env["NEWBIE_UI_MODEL"] == str(
        models.resolve()
    )  # the page's newbie.load() takes a models/ folder as path
    with pytest.raises(NewbieError, match="not a ComfyUI models folder"):
        streamlit_command(
            build_parser().parse_args(["ui", "--comfy-dir", str(tmp_path), "--data-dir", str(tmp_path / "g")])
        )
    args = build_parser().parse_args(
        [
            "serve",
            "--comfy-dir",
            str(models),
            "--device",
            "cpu",
            "--dtype",
            "fp32",
            "--data-dir",
            str(tmp_path / "serve"),
        ]
    )
    service = local_service(args, limits_from(args), load_kwargs(args))
    try:
        assert service.model_name == "NewBie-Image-Exp0.1-bf16.safetensors"
        assert len(service.workers[0].runner.pipe.folder.notes) == 4
    finally:
        service.store.close()


def test_a_file_given_as_the_wrong_component_is_named(layouts, capsys):
    _, _, files = layouts
    code = main(
        [
            "generate",
            "x",
            "--model",
            str(files["transformer"]),
            "--text-encoder",
            str(files["clip_model"]),
            "--clip-model",
            str(files["text_encoder"]),
            "--vae",
            str(files["vae"]),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "jina_clip_v2_bf16.safetensors: this is a ComfyUI Jina CLIP v2 file" in err
    assert "give it as --clip-model, not --text-encoder" in err
    assert main(["inspect", str(files["vae"])]) == 2
    assert (
        "this is a single file, BFL/LDM autoencoder keys (ae.safetensors); give it as --vae, not --model"
        in capsys.readouterr().err
    )

"""Reading adapter files: PEFT and LyCORIS layouts, every accepted key prefix, alpha/scale, and the errors."""

import json

import pytest
import torch
from safetensors.torch import save_file

from newbie.adapters import AdapterMismatch, load_adapter, parse_lora
from newbie.adapters.deltas import LokrDelta, LoraDelta
from newbie.errors import NewbieError
from tests.adapters.makers import LOKR_TARGETS, PEFT_TARGETS, write_lokr, write_peft


def test_peft_folder_maps_keys_to_layers_with_alpha_over_rank(tmp_path, shapes):
    a = load_adapter(write_peft(tmp_path / "lora", shapes, rank=2, alpha=4.0), shapes)
    assert a.kind == "lora" and sorted(a.deltas) == sorted(PEFT_TARGETS)
    d = a.deltas["layers.0.attention.qkv"]
    assert isinstance(d, LoraDelta) and d.scale == 2.0 and d.shape == shapes["layers.0.attention.qkv"]
    assert len(a.sha256) == 64 and a.config_sha256 and not a.notes
    assert a.name == "lora"


@pytest.mark.parametrize(
    "prefix", ["", "base_model.model.", "transformer.", "unet.base_model.model.", "diffusion_model."]
)
def test_comfyui_key_prefixes_are_accepted(tmp_path, shapes, prefix):
    a = load_adapter(write_peft(tmp_path / "l", shapes, prefix=prefix), shapes)
    assert sorted(a.deltas) == sorted(PEFT_TARGETS)


def test_lycoris_names_resolve_against_real_layer_names(tmp_path, shapes):
    a = load_adapter(write_lokr(tmp_path / "lokr.safetensors", shapes, alpha=2.0), shapes)
    assert a.kind == "lokr" and sorted(a.deltas) == sorted(LOKR_TARGETS)
    assert all(
        isinstance(d, LokrDelta) and d.scale == 1.0 for d in a.deltas.values()
    )  # full factors: scale 1
    f = load_adapter(write_lokr(tmp_path / "lokr_f.safetensors", shapes, rank=2, alpha=3.0), shapes)
    d = f.deltas["noise_refiner.0.feed_forward.w2"]
    assert d.rank == 2 and d.scale == 1.5  # factorised: alpha / rank, as LyCORIS
    assert d.weight().shape == shapes["noise_refiner.0.feed_forward.w2"]


def test_kohya_style_alpha_tensor_and_missing_alpha(tmp_path, shapes):
    name = "layers.0.attention.out"
    out, inp = shapes[name]
    base = {
        "lora_unet_layers_0_attention_out.lora_down.weight": torch.ones(4, inp),
        "lora_unet_layers_0_attention_out.lora_up.weight": torch.ones(out, 4),
    }
    save_file(
        {**base, "lora_unet_layers_0_attention_out.alpha": torch.tensor(1.0)}, str(tmp_path / "k.safetensors")
    )
    assert load_adapter(tmp_path / "k.safetensors", shapes).deltas[name].scale == 0.25
    save_file(base, str(tmp_path / "bare.safetensors"))
    bare = load_adapter(tmp_path / "bare.safetensors", shapes)
    assert bare.deltas[name].scale == 1.0 and "no alpha found" in bare.notes[0]


def test_a_renamed_peft_file_does_not_borrow_a_neighbours_config(tmp_path, shapes):
    folder = write_peft(tmp_path / "x", shapes, alpha=8.0)
    (folder / "adapter_model.safetensors").rename(folder / "renamed.safetensors")
    a = load_adapter(folder / "renamed.safetensors", shapes)
    assert a.notes and a.deltas["layers.0.attention.qkv"].scale == 1.0


def test_peft_alpha_pattern_and_rslora(tmp_path, shapes):
    folder = write_peft(tmp_path / "p", shapes, rank=2, alpha=4.0)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg.update(alpha_pattern={"attention.qkv": 1.0}, use_rslora=True)
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    a = load_adapter(folder, shapes)
    assert a.deltas["layers.0.attention.qkv"].scale == pytest.approx(1.0 / 2**0.5)
    assert a.deltas["layers.1.attention.out"].scale == pytest.approx(4.0 / 2**0.5)


def test_a_mismatched_adapter_names_the_first_bad_key(tmp_path, shapes):
    folder = write_peft(
        tmp_path / "big", shapes, targets=["layers.1.attention.out", "layers.0.attention.qkv"]
    )
    wrong = {
        k: (torch.zeros(2, 50) if "layers.0" in k and "lora_A" in k else v)
        for k, v in _read(folder / "adapter_model.safetensors").items()
    }
    wrong["base_model.model.layers.9.attention.qkv.lora_A.weight"] = torch.zeros(2, 48)
    save_file(wrong, str(folder / "adapter_model.safetensors"))
    with pytest.raises(
        AdapterMismatch,
        match=r"does not fit this model: key 'base_model\.model\.layers\.0\.attention"
        r"\.qkv\.lora_A\.weight': its weight change is \[96, 50\] but layer "
        r"layers\.0\.attention\.qkv is \[96, 48\]",
    ):
        load_adapter(folder, shapes)


def test_unknown_layers_and_unsupported_kinds_are_named(tmp_path, shapes):
    save_file(
        {
            "transformer.layers.0.attn.to_q.lora_A.weight": torch.zeros(2, 48),
            "transformer.layers.0.attn.to_q.lora_B.weight": torch.zeros(48, 2),
        },
        str(tmp_path / "d.safetensors"),
    )
    with pytest.raises(
        AdapterMismatch, match="key 'transformer.layers.0.attn.to_q.lora_A.weight' names no Linear"
    ):
        load_adapter(tmp_path / "d.safetensors", shapes)
    save_file(
        {"lycoris_layers_0_attention_qkv.hada_w1_a": torch.zeros(2, 2)}, str(tmp_path / "h.safetensors")
    )
    with pytest.raises(AdapterMismatch, match="LoHa adapters are not supported"):
        load_adapter(tmp_path / "h.safetensors", shapes)
    save_file(
        {"base_model.model.layers.0.attention.qkv.lora_A.weight": torch.zeros(2, 48)},
        str(tmp_path / "half.safetensors"),
    )
    with pytest.raises(AdapterMismatch, match="has no lora_up tensor"):
        load_adapter(tmp_path / "half.safetensors", shapes)


def test_file_errors_are_one_line(tmp_path, shapes):
    with pytest.raises(NewbieError, match="no such adapter"):
        load_adapter(tmp_path / "nope.safetensors", shapes)
    (tmp_path / "a.bin").write_bytes(b"x")
    with pytest.raises(NewbieError, match="safetensors files only"):
        load_adapter(tmp_path / "a.bin", shapes)
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(NewbieError, match="damaged safetensors"):
        load_adapter(tmp_path / "bad.safetensors", shapes)


def test_parse_lora_strength_suffix():
    assert parse_lora("a/b.safetensors:0.8") == ("a/b.safetensors", 0.8)
    assert parse_lora("a/b") == ("a/b", 1.0)
    assert parse_lora("C:/loras/x.safetensors") == ("C:/loras/x.safetensors", 1.0)
    assert parse_lora("C:/loras/x.safetensors:-0.5") == ("C:/loras/x.safetensors", -0.5)


def _read(path):
    from safetensors.torch import load_file

    return load_file(str(path))

"""The written LoRA file: our adapter loader reads back exactly the trained deltas, and every key lands on a
targeted layer in ComfyUI's key map (the rule of comfy/lora.py's model_lora_keys_unet, rebuilt here from the
model's own state dict: `diffusion_model.<name>` and `lora_unet_<name with . -> _>` for each weight)."""

import json

import pytest
import torch
from safetensors import safe_open

from newbie.adapters import linear_shapes
from newbie.adapters.adapter import load_adapter
from newbie.demo.tiny import tiny_dit_config
from newbie.model.dit import NextDiT
from newbie.train import lorafile
from newbie.train.lora import DEFAULT_TARGETS, FULL_TARGETS, LoraSet, parse_targets, target_layers

# what ComfyUI's LoRA weight adapter reads for one key-map entry x (up, down) besides x.alpha
COMFY_PAIRS = {
    "comfy": (".lora_B.weight", ".lora_A.weight"),
    "kohya": (".lora_up.weight", ".lora_down.weight"),
}
FACTS = dict(steps=3, resolution=128, images=2, tag_frequency={".": {"standing": 1}}, base_sha256="ab" * 32)


def comfy_key_map(dit) -> dict[str, str]:
    key_map = {}
    for k in dit.state_dict():
        k = "diffusion_model." + k
        if k.endswith(".weight"):
            stem = k[len("diffusion_model.") : -len(".weight")]
            key_map["lora_unet_" + stem.replace(".", "_")] = k
            key_map[k[: -len(".weight")]] = k
    return key_map


@pytest.fixture
def trained():
    torch.manual_seed(0)
    dit = NextDiT(tiny_dit_config())
    lora = LoraSet(target_layers(dit, FULL_TARGETS), rank=4, alpha=2.0, seed=1)
    with torch.no_grad():
        for _, layer in lora.named_layers():
            layer.lora_up.normal_()  # as after training: up is no longer zero
    return dit, lora


def test_targets_match_the_official_suffixes():
    dit = NextDiT(tiny_dit_config())
    names = set(target_layers(dit, DEFAULT_TARGETS))
    assert "layers.0.attention.qkv" in names and "noise_refiner.0.attention.out" in names
    assert "context_refiner.0.feed_forward.w2" in names and "clip_text_pooled_proj.1" in names
    assert not any("w1" in n or "adaLN" in n for n in names)
    full = set(target_layers(dit, parse_targets("full")))
    assert "layers.1.feed_forward.w3" in full and "layers.0.adaLN_modulation.1" in full
    with pytest.raises(Exception, match="no layer named 'attention.nope'"):
        target_layers(dit, ("attention.nope",))


@pytest.mark.parametrize("fmt", lorafile.FORMATS)
def test_file_loads_in_our_loader_and_maps_in_comfy(tmp_path, trained, fmt):
    dit, lora = trained
    path = tmp_path / "x.safetensors"
    lorafile.write(path, lora, FACTS, fmt=fmt, dtype="fp32")
    adapter = load_adapter(path, linear_shapes(dit))
    layers = dict(lora.named_layers())
    assert set(adapter.deltas) == set(layers)
    for name, layer in layers.items():
        want = layer.scale * layer.lora_up.detach() @ layer.lora_down.detach()
        torch.testing.assert_close(adapter.deltas[name].weight().float(), want)

    key_map = comfy_key_map(dit)
    up, down = COMFY_PAIRS[fmt]
    with safe_open(path, "pt") as f:
        keys = set(f.keys())
        meta = f.metadata()
    stems = {k[: -len(".alpha")] for k in keys if k.endswith(".alpha")}
    assert len(stems) == len(layers)
    assert keys == {s + e for s in stems for e in (up, down, ".alpha")}
    assert {key_map[s] for s in stems} == {"diffusion_model." + n + ".weight" for n in layers}
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2"
    assert meta["sshs_model_hash"] == "ab" * 32 and meta["ss_steps"] == "3"
    assert json.loads(meta["ss_tag_frequency"]) == {".": {"standing": 1}}


def test_hooked_lora_equals_the_loaded_delta(trained):
    """What training optimises (our hooks) is what the loader applies: same output."""
    dit, lora = trained
    name, layer = next(iter(lora.named_layers()))
    module = dict(dit.named_modules())[name]
    x = torch.randn(3, module.in_features)
    base = module(x)
    lora.attach(dit)
    hooked = module(x)
    lora.detach()
    torch.testing.assert_close(module(x), base)
    torch.testing.assert_close(hooked, base + x @ (layer.scale * layer.lora_up @ layer.lora_down).T.detach())

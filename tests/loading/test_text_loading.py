import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from newbie.demo.tiny import TinySizes, tiny_components
from newbie.errors import CheckpointError
from newbie.loading.text import load_gemma, load_jina, load_tokenizer
from newbie.loading.writer import save_gemma, save_jina


@pytest.fixture(scope="module")
def parts():
    dit, gemma, gtok, jina, jtok, vae = tiny_components(seed=5, sizes=TinySizes())
    return gemma, gtok, jina, jtok


def _hidden(gemma, ids):
    return gemma(input_ids=ids, attention_mask=torch.ones_like(ids), n_layers=len(gemma.layers) - 1)


@pytest.mark.parametrize("prefix", ["language_model.model.", "model.language_model.", "model.", ""])
def test_gemma_loads_from_every_known_layout(parts, tmp_path, prefix):
    gemma, gtok, _, _ = parts
    save_gemma(tmp_path, gemma, gtok, prefix=prefix)
    # a multimodal folder also holds weights text encoding never reads
    sd = load_file(str(tmp_path / "model.safetensors"))
    sd["vision_tower.vision_model.embeddings.patch_embedding.weight"] = torch.zeros(4, 3, 2, 2)
    sd["multi_modal_projector.mm_input_projection_weight"] = torch.zeros(4, 4)
    save_file(sd, str(tmp_path / "model.safetensors"))
    loaded = load_gemma(tmp_path, torch.float32)
    ids = torch.tensor([[2, 10, 11, 12, 13]])
    torch.testing.assert_close(_hidden(loaded, ids), _hidden(gemma, ids), rtol=0, atol=0)


def test_gemma_with_missing_weights_is_an_error_not_random_weights(parts, tmp_path):
    gemma, gtok, _, _ = parts
    save_gemma(tmp_path, gemma, gtok)
    sd = load_file(str(tmp_path / "model.safetensors"))
    sd.pop("language_model.model.layers.1.mlp.down_proj.weight")
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing 1: layers\.1\.mlp\.down_proj\.weight"):
        load_gemma(tmp_path, torch.float32)


def test_gemma_under_an_unknown_prefix_is_an_error(parts, tmp_path):
    gemma, gtok, _, _ = parts
    save_gemma(tmp_path, gemma, gtok, prefix="somewhere.else.")
    with pytest.raises(CheckpointError, match="no 'embed_tokens.weight' under any known prefix"):
        load_gemma(tmp_path, torch.float32)


def _pooled(jina, ids):
    return jina(ids, torch.ones_like(ids))


def test_jina_clip_text_tower_loads_natively_and_ignores_lora(parts, tmp_path):
    _, _, jina, jtok = parts
    save_jina(tmp_path, jina, jtok, lora_rank=4)
    keys = load_file(str(tmp_path / "model.safetensors")).keys()
    assert (
        "text_model.transformer.roberta.encoder.layers.0.mixer.Wqkv.parametrizations.weight.original" in keys
    )
    assert any(k.endswith("lora_A") for k in keys)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "jina_clip" and "auto_map" not in cfg  # nothing for remote code to run
    loaded = load_jina(tmp_path, torch.float32)
    ids = torch.tensor([[0, 10, 11, 12, 2]])
    torch.testing.assert_close(_pooled(loaded, ids), _pooled(jina, ids), rtol=0, atol=0)


def test_jina_shape_mismatch_names_the_tensor(parts, tmp_path):
    _, _, jina, jtok = parts
    save_jina(tmp_path, jina, jtok)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["text_config"]["hf_model_config_kwargs"]["intermediate_size"] = 100
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"layers\.0\.mlp\.fc1\.weight"):
        load_jina(tmp_path, torch.float32)


def test_jina_reads_a_native_jina_embeddings_v3_config(parts, tmp_path):
    """transformers' own config.json for the tower (rope_parameters, not rotary_emb_base) gives the same model;
    a RoPE base it does not say is not assumed away: a different base, different outputs."""
    _, _, jina, jtok = parts
    save_jina(tmp_path, jina, jtok)
    c = jina.config
    native = {
        "model_type": "jina_embeddings_v3",
        "architectures": ["JinaEmbeddingsV3Model"],
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "intermediate_size": c.intermediate_size,
        "max_position_embeddings": 8194,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
    }
    (tmp_path / "config.json").write_text(json.dumps(native))
    ids = torch.tensor([[0, 10, 11, 12, 2]])
    assert torch.equal(_pooled(load_jina(tmp_path, torch.float32), ids), _pooled(jina, ids))
    native["rope_parameters"]["rope_theta"] = 10.0
    (tmp_path / "config.json").write_text(json.dumps(native))
    assert not torch.equal(_pooled(load_jina(tmp_path, torch.float32), ids), _pooled(jina, ids))


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("hidden_act", "relu", "hidden_act 'relu' is not supported"),
        ("num_attention_heads", 5, "must split into 5 heads"),
        ("hidden_size", "wide", "hidden_size must be a positive integer"),
    ],
)
def test_jina_bad_config_is_one_line_naming_the_file(parts, tmp_path, field, value, says):
    _, _, jina, jtok = parts
    save_jina(tmp_path, jina, jtok)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["text_config"]["hf_model_config_kwargs"][field] = value
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="config.json: bad Jina CLIP config") as e:
        load_jina(tmp_path, torch.float32)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_tokenizers_round_trip(parts, tmp_path):
    gemma, gtok, jina, jtok = parts
    save_gemma(tmp_path / "g", gemma, gtok)
    save_jina(tmp_path / "j", jina, jtok)
    g = load_tokenizer([tmp_path / "g"], "Gemma")
    j = load_tokenizer([tmp_path / "j"], "Jina")
    assert g("red_hair")["input_ids"] == gtok("red_hair")["input_ids"]
    assert g("")["input_ids"] == [2]  # just <bos>, as the empty negative in the official sampler
    assert j("")["input_ids"] == [0, 2]
    with pytest.raises(CheckpointError, match="no Gemma tokenizer"):
        load_tokenizer([tmp_path / "nothing"], "Gemma")

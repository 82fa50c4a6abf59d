"""Our Jina CLIP v2 text tower against transformers' JinaEmbeddingsV3Model (tiny random configs, CPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from newbie.model.jina import JinaConfig, JinaTextModel

SRC = str(Path(__file__).resolve().parents[2] / "src")
WIDTHS = dict(vocab_size=60, hidden_size=48, num_hidden_layers=3, num_attention_heads=4, intermediate_size=80)


def _pair(rope_theta: float = 20000.0):
    """transformers' model with random weights (norms and biases perturbed off their ones/zeros init) and ours
    holding the same tensors."""
    from transformers import JinaEmbeddingsV3Config, JinaEmbeddingsV3Model

    torch.manual_seed(0)
    hf_cfg = JinaEmbeddingsV3Config(
        **WIDTHS, rope_parameters={"rope_type": "default", "rope_theta": rope_theta}
    )
    hf_cfg._attn_implementation = "sdpa"  # what the engine used to build
    theirs = JinaEmbeddingsV3Model(hf_cfg, add_pooling_layer=False).eval()
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ours = JinaTextModel(JinaConfig(**WIDTHS, rope_theta=rope_theta)).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)  # the same key names, nothing left over
    return theirs, ours


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, WIDTHS["vocab_size"], (3, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 2:] = 0
    ids[mask == 0] = 1  # <pad>
    return ids, mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("padded", [True, False])
@torch.no_grad()
def test_matches_transformers_to_the_bit(dtype, padded):
    """The same ops in the same order (fp32 RoPE angles cast to the activations' dtype, SDPA with the same
    scale, no mask without padding), so equal bits in fp32 and in bf16, padded rows included."""
    theirs, ours = _pair()
    theirs.to(dtype), ours.to(dtype)
    ids, mask = _batch()
    if not padded:
        mask = torch.ones_like(mask)
    want = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
    got = ours(ids, mask)
    assert got.dtype == dtype and got.shape == (3, 11, WIDTHS["hidden_size"])
    assert torch.equal(got, want)


@torch.no_grad()
def test_rope_base_is_used():
    theirs, ours = _pair(rope_theta=500.0)
    ids, mask = _batch()
    assert torch.equal(ours(ids, mask), theirs(input_ids=ids, attention_mask=mask).last_hidden_state)
    other = JinaTextModel(JinaConfig(**WIDTHS)).eval()
    other.load_state_dict(ours.state_dict())
    assert not torch.equal(other(ids, mask), ours(ids, mask))


@torch.no_grad()
def test_padding_changes_no_valid_token():
    _, ours = _pair()
    ids, mask = _batch()
    full = ours(ids, mask)
    for b in range(3):
        n = int(mask[b].sum())
        alone = ours(ids[b : b + 1, :n], mask[b : b + 1, :n])
        torch.testing.assert_close(full[b, :n], alone[0], rtol=1e-5, atol=1e-5)  # other kernel tiling only


def test_config_from_jina_clip_and_native_fields():
    clip = JinaConfig.from_fields({"hidden_size": 32, "rotary_emb_base": 1000, "use_flash_attn": False})
    assert (clip.hidden_size, clip.rope_theta, clip.num_hidden_layers) == (32, 1000.0, 24)
    native = JinaConfig.from_fields(
        {"model_type": "jina_embeddings_v3", "rope_parameters": {"rope_type": "default", "rope_theta": 7.0}}
    )
    assert native.rope_theta == 7.0 and native == JinaConfig(rope_theta=7.0)
    with pytest.raises(ValueError, match="rope_type 'yarn'"):
        JinaConfig.from_fields({"rope_parameters": {"rope_type": "yarn", "rope_theta": 7.0}})
    with pytest.raises(ValueError, match="hidden_size 30 must split into 4 heads"):
        JinaConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="hidden_act 'relu'"):
        JinaConfig(hidden_act="relu")


def test_built_on_meta_keeps_a_real_rope_table():
    with torch.device("meta"):
        model = JinaTextModel(JinaConfig(**WIDTHS))
    assert model.embeddings.word_embeddings.weight.is_meta and model.inv_freq.device.type == "cpu"
    assert "inv_freq" not in model.state_dict()  # not a checkpoint tensor


def test_loading_and_running_a_jina_clip_checkpoint_imports_neither_transformers_nor_diffusers(tmp_path):
    """A tiny tower in jina-clip-v2's own layout (flash names, fused Wqkv, LoRA parametrizations) is read,
    built and run without transformers, diffusers or accelerate being imported, nor torch._dynamo (seconds
    each in a fresh process; an init run on meta tensors would import the last)."""
    from newbie.loading.writer import save_jina

    torch.manual_seed(0)
    model = JinaTextModel(JinaConfig(**WIDTHS)).eval()
    save_jina(tmp_path, model, _NoTokenizer(), lora_rank=2)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "jina_clip"
    ids, mask = _batch()
    torch.save({"ids": ids, "mask": mask, "want": model(ids, mask).detach()}, tmp_path / "io.pt")
    code = (
        "import sys, torch\n"
        "from newbie.loading.text import load_jina\n"
        f"d = torch.load({str(tmp_path / 'io.pt')!r})\n"
        f"jina = load_jina(__import__('pathlib').Path({str(tmp_path)!r}), torch.float32)\n"
        "with torch.no_grad():\n"
        "    assert torch.equal(jina(d['ids'], d['mask']), d['want'])\n"
        "heavy = ('transformers', 'diffusers', 'accelerate', 'torch._dynamo')\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[]\n"


class _NoTokenizer:
    def save_pretrained(self, folder: str) -> None:
        pass  # the weights are what this test reads

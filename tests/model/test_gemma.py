"""Our Gemma3 text decoder against transformers' Gemma3TextModel (the reference, used only here), on tiny random
configs with both layer types, a window short enough to bite, GQA, linear RoPE scaling and right padding."""

import json
import os
import subprocess
import sys

import pytest
import torch

from newbie.errors import CheckpointError
from newbie.model.gemma import Gemma, GemmaConfig, hidden_state_layers

TYPES = ["sliding_attention", "full_attention", "sliding_attention", "sliding_attention", "full_attention"]


def hf_model(dtype=torch.float32, seed=0, **changes):
    from transformers import Gemma3TextConfig, Gemma3TextModel

    torch.manual_seed(seed)
    fields = dict(
        vocab_size=60,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=5,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        query_pre_attn_scalar=6,
        sliding_window=4,
        layer_types=TYPES,
        rope_parameters={
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
        },
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=1,
    )
    cfg = Gemma3TextConfig(**{**fields, **changes})
    cfg._attn_implementation = "sdpa"
    model = Gemma3TextModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():  # RMSNorm weights start at 0: give every weight a value
            p.normal_(0, 0.3)
    rope = dict(model.rotary_emb.named_buffers())
    model.to(dtype)
    for (
        name,
        buf,
    ) in rope.items():  # fp32 RoPE frequencies, as the loader leaves them (weights assigned in dtype)
        model.rotary_emb.register_buffer(name, buf, persistent=False)
    return model


def ours_from(hf) -> Gemma:
    ours = Gemma(GemmaConfig.from_dict(hf.config.to_dict())).eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    return ours.to(hf.dtype)


def batch(lengths, T, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 60, (len(lengths), T), generator=g)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        ids[i, n:] = 0
    return ids, mask


CASES = {
    "no padding, shorter than the window": ([3, 3], 3),
    "no padding, window bites": ([11, 11], 11),
    "right padding": ([12, 5, 1], 12),
}


@pytest.mark.parametrize("case", CASES)
def test_every_hidden_state_is_transformers_bit_for_bit_in_fp32(case):
    hf = hf_model()
    ours = ours_from(hf)
    ids, mask = batch(*CASES[case])
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        n = len(hf.layers)
        for index in range(-len(ref), 0):
            got = ours(input_ids=ids, attention_mask=mask, n_layers=hidden_state_layers(index, n))
            valid = mask.bool()
            torch.testing.assert_close(got[valid], ref[index][valid], rtol=0, atol=0)
            if case != "right padding":  # the padding rows too, when there are none to differ
                torch.testing.assert_close(got, ref[index], rtol=0, atol=0)


def test_hidden_state_indices_count_layers_as_transformers_does():
    assert [hidden_state_layers(i, 3) for i in (-4, -3, -2, -1, 0, 2, 3)] == [0, 1, 2, None, 0, 2, None]
    with pytest.raises(ValueError, match="hidden state -5 of a 3-layer Gemma"):
        hidden_state_layers(-5, 3)


def test_bf16_matches_transformers_and_embeds_in_place_of_ids():
    hf = hf_model(torch.bfloat16, seed=3)
    ours = ours_from(hf)
    ids, mask = batch([12, 7], 12, seed=2)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-2]
        got = ours(input_ids=ids, attention_mask=mask, n_layers=4)
        embeds = ours.embed_tokens(ids)
        again = ours(inputs_embeds=embeds, attention_mask=mask, n_layers=4)
    valid = mask.bool()
    torch.testing.assert_close(got[valid].float(), ref[valid].float(), rtol=0, atol=0)
    torch.testing.assert_close(again, got, rtol=0, atol=0)
    assert embeds.dtype == torch.bfloat16 and ours.dtype == torch.bfloat16


def test_padding_after_the_valid_tokens_changes_nothing_before_it():
    hf = hf_model()
    ours = ours_from(hf)
    ids, mask = batch([9, 9], 9)
    longer = torch.cat([ids, torch.zeros(2, 7, dtype=torch.long)], 1)
    lmask = torch.cat([mask, torch.zeros(2, 7, dtype=torch.long)], 1)
    with torch.no_grad():
        a = ours(input_ids=ids, attention_mask=mask)
        b = ours(input_ids=longer, attention_mask=lmask)[:, :9]
    torch.testing.assert_close(a, b)  # other SDPA kernels (is_causal vs a mask): fp32 rounding, not bits


def test_config_from_google_transformers4_spelling_and_comfy_fields():
    from newbie.loading.comfy import gemma3_4b_fields

    google = {  # gemma-3-4b-it's text_config: the rest are Gemma3TextConfig defaults
        "hidden_size": 2560,
        "intermediate_size": 10240,
        "model_type": "gemma3_text",
        "num_hidden_layers": 34,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "sliding_window": 1024,
    }
    cfg = GemmaConfig.from_dict(google)
    assert (cfg.vocab_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (
        262208,
        8,
        4,
        256,
    )
    assert cfg.query_pre_attn_scalar == 256 and cfg.rms_norm_eps == 1e-6
    assert cfg.layer_types[:6] == ["sliding_attention"] * 5 + ["full_attention"]
    assert cfg.rope_parameters == {
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
    }
    widths = dict(vocab_size=262208, hidden_size=2560, intermediate_size=10240, num_hidden_layers=34)
    comfy = GemmaConfig.from_dict(
        gemma3_4b_fields(**widths, num_attention_heads=8, num_key_value_heads=4, head_dim=256)
    )
    assert comfy == cfg
    from transformers import Gemma3TextConfig

    hf = Gemma3TextConfig(**google)
    assert GemmaConfig.from_dict(hf.to_dict()) == cfg  # transformers 5's spelling of the same config
    back = Gemma3TextConfig(**{k: v for k, v in cfg.to_dict().items() if k != "model_type"})
    assert back.layer_types == hf.layer_types and back.rope_parameters == hf.rope_parameters


@pytest.mark.parametrize(
    "change,message",
    [
        ({"hidden_size": "big"}, "hidden_size must be an integer"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 2.0}}, "RoPE type 'yarn'"),
        ({"layer_types": ["full_attention"]}, "layer_types must name 2"),
        ({"hidden_activation": "silu"}, "hidden_activation 'silu'"),
    ],
)
def test_bad_configs_are_one_line_errors(change, message):
    with pytest.raises(CheckpointError, match=message):
        GemmaConfig.from_dict({"num_hidden_layers": 2, **change}, "cfg.json")


def test_loading_and_encoding_a_gemma_imports_no_transformers(tmp_path):
    """read_gemma + build_gemma on a checkpoint written with safetensors alone, then an encode and a few
    decoded tokens, in a fresh process: transformers, diffusers and accelerate stay out of sys.modules."""
    from safetensors.torch import save_file

    hf = hf_model()
    save_file(
        {"language_model.model." + k: v.contiguous() for k, v in hf.state_dict().items()},
        tmp_path / "model.safetensors",
    )
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "gemma3", "text_config": hf.config.to_dict()})
    )
    with torch.no_grad():
        ids, mask = batch([6, 4], 6)
        ref = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-2]
    torch.save({"ids": ids, "mask": mask, "ref": ref}, tmp_path / "io.pt")
    code = f"""
import sys, torch
from pathlib import Path
from newbie.loading.text import read_gemma, build_gemma
from newbie.model.gemma import hidden_state_layers
folder = Path({str(tmp_path)!r})
gemma = build_gemma(folder, read_gemma(folder, torch.float32))
io = torch.load(folder / "io.pt")
with torch.no_grad():
    out = gemma(input_ids=io["ids"], attention_mask=io["mask"], n_layers=hidden_state_layers(-2, len(gemma.layers)))
valid = io["mask"].bool()
assert torch.equal(out[valid], io["ref"][valid])
from newbie.prompts.llm_model import make_decoder
dec = make_decoder(gemma, 16, torch.device("cpu"))
assert dec.prefill([2, 5, 6]).shape == (60,) and dec.step(7).isfinite().all()
bad = [m for m in ("transformers", "diffusers", "accelerate") if m in sys.modules]
assert not bad, bad
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_a_folder_we_write_is_read_by_transformers_as_the_same_model(tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoConfig, Gemma3TextModel

    from newbie.demo.tiny import word_tokenizer
    from newbie.loading.writer import GEMMA_SAVE_PREFIX, save_gemma

    ours = ours_from(hf_model(seed=4))
    save_gemma(tmp_path, ours, word_tokenizer(["a", "b"], "gemma"))
    cfg = AutoConfig.from_pretrained(str(tmp_path)).text_config
    cfg._attn_implementation = "sdpa"
    theirs = Gemma3TextModel(cfg).eval()
    sd = load_file(str(tmp_path / "model.safetensors"))
    theirs.load_state_dict({k.removeprefix(GEMMA_SAVE_PREFIX): v for k, v in sd.items()}, strict=True)
    ids, mask = batch([10, 6], 10)
    with torch.no_grad():
        ref = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours(input_ids=ids, attention_mask=mask)
    assert cfg.layer_types == TYPES and cfg.query_pre_attn_scalar == 6
    torch.testing.assert_close(got[mask.bool()], ref[mask.bool()], rtol=0, atol=0)


def test_the_demo_models_gemma_gives_transformers_bits():
    """The shipped demo model's text encoder, loaded by us and by transformers: the same cap_feats, padding
    included, so the demo image does not change."""
    from transformers import AutoConfig, Gemma3TextModel

    from newbie.demo.model import PACKAGED
    from newbie.loading.text import build_gemma, read_gemma

    folder = PACKAGED / "text_encoder"
    read = read_gemma(folder, torch.float32)
    cfg = AutoConfig.from_pretrained(str(folder)).text_config
    cfg._attn_implementation = "sdpa"
    theirs = Gemma3TextModel(cfg).eval()
    theirs.load_state_dict(read[2], strict=True)
    ours = build_gemma(folder, read)
    ids, mask = batch([40, 1, 17], 40)
    ids = ids % cfg.vocab_size
    with torch.no_grad():
        ref = theirs(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-2]
        got = ours(input_ids=ids, attention_mask=mask, n_layers=hidden_state_layers(-2, len(ours.layers)))
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


def _decode_case(dtype, heads=8, kv_heads=4, slots=33, pos=25, window=None, seed=0):
    """One decode step's q (1, H, 1, hd), the cache's k, v (1, KV, slots, hd) and the decoder's boolean mask
    (1, 1, 1, slots): slots past pos unwritten (garbage, as in a static cache), a sliding window if given."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (
        torch.randn(1, n, t, 16, generator=g) for n, t in ((heads, 1), (kv_heads, slots), (kv_heads, slots))
    )
    keys = torch.arange(slots)
    mask = keys <= pos
    if window is not None:
        mask &= keys > pos - window
    return q.to(dtype), k.to(dtype), v.to(dtype), mask[None, None, None]


@pytest.mark.parametrize("heads,kv_heads", [(8, 4), (4, 4), (6, 2)])
@pytest.mark.parametrize("window", [None, 5])
def test_a_decode_steps_attention_is_sdpas_in_fp32_and_bf16(heads, kv_heads, window):
    from newbie.model.gemma import attend, attend_one

    for dtype, tol in ((torch.float32, 1e-6), (torch.bfloat16, 1.6e-2)):
        q, k, v, mask = _decode_case(dtype, heads, kv_heads, window=window)
        got, ref = attend_one(q, k, v, mask, 0.3), attend(q, k, v, mask, 0.3)
        assert got.dtype == dtype and got.shape == (1, heads, 1, 16)
        torch.testing.assert_close(got, ref, rtol=tol, atol=tol)


def test_a_decode_step_reads_no_slot_its_mask_drops():
    # the sliding window and the unwritten slots: what they hide changes nothing, and the rest is attention
    # over the visible slots alone
    from newbie.model.gemma import attend_one

    q, k, v, mask = _decode_case(torch.float32, pos=25, window=5)
    got = attend_one(q, k, v, mask, 0.3)
    hidden = ~mask[0, 0, 0]
    k2, v2 = k.clone(), v.clone()
    k2[:, :, hidden], v2[:, :, hidden] = 1e4, -1e4
    assert torch.equal(attend_one(q, k2, v2, mask, 0.3), got)
    seen = slice(21, 26)
    alone = attend_one(q, k[:, :, seen], v[:, :, seen], mask[..., seen], 0.3)
    torch.testing.assert_close(got, alone, rtol=1e-6, atol=1e-6)


def test_only_the_decoders_one_token_steps_take_the_decode_attention(monkeypatch):
    import newbie.model.gemma as gemma_module
    from newbie.prompts.llm_model import make_decoder

    ours = ours_from(hf_model())
    calls = []
    real = gemma_module.attend_one
    monkeypatch.setattr(gemma_module, "attend_one", lambda *a: calls.append(a[0].shape) or real(*a))
    ids, mask = batch([6, 4], 6)
    with torch.no_grad():
        ours(input_ids=ids, attention_mask=mask)
        ours(input_ids=ids[:1, :1])  # a one-token encode has no cache: SDPA as before
        assert calls == []
        dec = make_decoder(ours, 16, torch.device("cpu"), "eager")
        dec.prefill([5, 6, 7])
        assert calls == []
        dec.step(8)
    assert calls == [(1, 4, 1, 8)] * len(TYPES)

"""The text-embedding cache (newbie.model.embed_cache): in memory across seeds, and on disk by key."""

import torch

import newbie
from newbie.model.embed_cache import EmbeddingCache

PROMPT = "1girl, red_hair, left, white_background"


def test_embedding_cache_skips_the_encoders_on_a_new_seed(tiny_model_dir, tmp_path):
    pipe = newbie.load(tiny_model_dir, device="cpu", dtype="fp32")
    calls = []
    encode = pipe.text.encode
    pipe.text.encode = lambda prompts, *a: calls.append(prompts) or encode(prompts, *a)
    a = pipe.generate(PROMPT, seed=1, steps=1, width=32, height=32)
    n = len(calls)
    b = pipe.generate(PROMPT, seed=2, steps=1, width=32, height=32)
    assert n == 2 and len(calls) == n  # cond + empty negative once, then never again
    assert not torch.equal(a.latents, b.latents)
    # on disk: a fresh cache object with the same key finds the entry
    disk = EmbeddingCache("enc-1", tmp_path)
    e = pipe.text.encode([PROMPT])
    disk.put(PROMPT, e)
    again = EmbeddingCache("enc-1", tmp_path).get(PROMPT)
    assert torch.equal(again.cap_feats, e.cap_feats) and torch.equal(again.pooled, e.pooled)
    assert EmbeddingCache("enc-2", tmp_path).get(PROMPT) is None  # other weights or dtype: another key

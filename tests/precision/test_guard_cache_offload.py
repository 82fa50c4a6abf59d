import torch

import newbie
from newbie.model.embed_cache import EmbeddingCache
from newbie.memory.offload import BlockStreamer, Offloaded

PROMPT = "1girl, red_hair, left, white_background"


def test_fp16_overflow_is_detected_and_recovered(tiny_model_dir):
    pipe = newbie.load(tiny_model_dir, device="cpu", dtype="fp16", text_dtype="fp32")
    with torch.no_grad():  # an FFN that overflows fp16 on any input
        pipe.dit.layers[0].feed_forward.w2.weight.mul_(1e4)
        pipe.dit.layers[0].feed_forward.w1.weight.mul_(1e2)
    gen = pipe.generate(PROMPT, seed=1, steps=2, width=32, height=32, sampler="euler")
    assert gen.guard_events, "the guard did not report anything"
    assert any("fp16" in e for e in gen.guard_events)
    assert torch.isfinite(gen.latents).all()
    assert all(e in gen.recipes[0].warnings for e in gen.guard_events)  # never saved silently


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


def test_offload_and_streaming_are_bit_identical(tiny_pipeline):
    dit = tiny_pipeline.dit
    g = torch.Generator().manual_seed(int(torch.randint(0, 999, ())))
    x, t = torch.randn(1, 16, 8, 8, generator=g), torch.rand(1, generator=g)
    cap, pooled = torch.randn(1, 6, dit.cfg.cap_feat_dim, generator=g), torch.randn(1, dit.cfg.clip_text_dim, generator=g)
    with torch.no_grad():
        ref = dit(x, t, cap, None, pooled)
        streamer = BlockStreamer(dit.layers, torch.device("cpu"), resident={0})
        holder = Offloaded(dit, torch.device("cpu"), exclude=tuple(dit.layers[i] for i in streamer.streamed))
        holder.load()
        out = dit(x, t, cap, None, pooled)
        holder.unload()
        streamer.remove()
    assert torch.equal(out, ref)
    assert not any(b._forward_pre_hooks or b._forward_hooks for b in dit.layers)


def test_int8_weights_generate_close_to_the_plain_model(tiny_model_dir):
    ref = newbie.load(tiny_model_dir, device="cpu", dtype="bf16").generate(PROMPT, seed=3, steps=2, width=32, height=32)
    q = newbie.load(tiny_model_dir, device="cpu", dtype="bf16", quantize="int8")
    gen = q.generate(PROMPT, seed=3, steps=2, width=32, height=32)
    assert gen.recipes[0].dtype == "bf16+int8"
    rel = ((gen.latents - ref.latents).norm() / ref.latents.norm()).item()
    assert 0 < rel < 0.2, rel

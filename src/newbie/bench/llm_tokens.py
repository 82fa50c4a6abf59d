"""`newbie bench speed`'s Gemma section: new tokens per second of the decoder that `newbie prompt expand --llm`
runs (newbie.prompts.llm_model.make_decoder), on the loaded text encoder (random weights at Gemma3-4B's real
shapes in the speed bench), against the memory-bandwidth bound of reading every weight once per token.

Greedy decoding from a random prompt: the grammar of the real expansion is host work on top (bench/llm_speed.py
measures the whole loop); this is the model's side of it. One token = one decoder step + an argmax read back.
"""

from __future__ import annotations

import statistics
import time

import torch


def weight_bytes(gemma) -> int:
    """Bytes one decode step reads: every parameter once (the tied embedding table is the output head; the
    input lookup reads one row of it)."""
    return sum(p.numel() * p.element_size() for p in gemma.parameters())


def copy_bandwidth(device: torch.device, gib: float = 2.0) -> float:
    """Device memory bandwidth in bytes/s from a device-to-device copy (bytes read + written), best of 5."""
    n = int(gib * 2**30) // 2
    src = torch.empty(n, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(5):
        _sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    del src, dst
    return 2 * n * 2 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def decode_speed(gemma, device, prompt_tokens: int = 512, new_tokens: int = 256, repeats: int = 3) -> dict:
    """Median new tokens/s over `repeats` greedy decodes of `new_tokens` after a `prompt_tokens` prefill."""
    from newbie.prompts.llm_model import make_decoder

    device = torch.device(device)
    vocab = gemma.config.vocab_size
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(vocab, (prompt_tokens,), generator=g).tolist()
    t0 = time.perf_counter()
    dec = make_decoder(gemma, prompt_tokens + new_tokens + 1, device)
    _sync(device)
    setup = time.perf_counter() - t0
    runs, prefills = [], []
    with torch.no_grad():
        for _ in range(repeats + 1):  # the first is a warm-up; a prefill starts the cache over
            t0 = time.perf_counter()
            token = int(dec.prefill(prompt).argmax())
            t1 = time.perf_counter()
            for _ in range(new_tokens):
                token = int(dec.step(token).argmax())  # the host needs each token, as the grammar does
            t2 = time.perf_counter()
            prefills.append(t1 - t0)
            runs.append(new_tokens / (t2 - t1))
    return {
        "decoder": type(dec).__name__,
        "cuda_graph": getattr(dec, "graph", None) is not None,
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "setup_s": setup,
        "prefill_s": statistics.median(prefills[1:]),
        "tokens_per_s_runs": runs[1:],
        "tokens_per_s": statistics.median(runs[1:]),
    }


def llm_section(res: dict, gemma, device, new_tokens: int = 256) -> None:
    """llm_tokens_per_s and its bound into the result."""
    out = decode_speed(gemma, device, new_tokens=new_tokens)
    out["weight_gb"] = weight_bytes(gemma) / 1e9
    device = torch.device(device)
    out["copy_bandwidth_tb_s"] = copy_bandwidth(device, 2.0 if device.type == "cuda" else 0.02) / 1e12
    # each token reads every weight once: no decoder beats bandwidth / weight bytes at batch 1
    out["bound_tokens_per_s"] = out["copy_bandwidth_tb_s"] * 1e3 / out["weight_gb"]
    out["pct_of_bound"] = 100 * out["tokens_per_s"] / out["bound_tokens_per_s"]
    res["llm_decode"] = out
    res["llm_tokens_per_s"] = out["tokens_per_s"]

"""`newbie bench speed`'s Gemma section: new tokens per second of the decoders that `newbie prompt expand
--llm` runs (newbie.prompts.llm_model.make_decoder: the plain graph "auto" and the torch.compile'd
"compiled"), on the loaded text encoder (random weights at Gemma3-4B's real shapes in the speed bench),
against the memory-bandwidth bound of reading every weight once per token; and where a step's time goes.

Greedy decoding from a random prompt: the grammar of the real expansion is host work on top
(bench/llm_speed.py measures the whole loop); this is the model's side of it. One token = one decoder step + an argmax read back.
"""

from __future__ import annotations

import gc
import statistics
import time

import torch

from newbie.bench.time_limit import time_limit

KINDS = ("auto", "compiled")
# seconds per kind, compile and capture included: a slow compile cannot take the whole GPU call
CAPS_S = {"auto": 60.0, "eager": 60.0, "compiled": 180.0}


class KindTimeout(TimeoutError):
    """One decoder kind ran past its cap (the section's own limit is a plain TimeoutError and ends it)."""


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


def _prompt(gemma, n: int) -> list[int]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(gemma.config.vocab_size, (n,), generator=g).tolist()


def _decode(
    gemma, device, prompt_tokens: int, new_tokens: int, repeats: int, kind: str, backend
) -> tuple[dict, torch.Tensor, list[int]]:
    """decode_speed's figures, the first step's logits (after the same eager prefill for every kind) and the
    last run's tokens."""
    from newbie.prompts.llm_model import make_decoder

    device = torch.device(device)
    prompt = _prompt(gemma, prompt_tokens)
    t0 = time.perf_counter()
    dec = make_decoder(gemma, prompt_tokens + new_tokens + 1, device, kind, backend)
    _sync(device)
    setup = time.perf_counter() - t0
    runs, prefills = [], []
    with torch.no_grad():
        for r in range(repeats + 1):  # the first is a warm-up; a prefill starts the cache over
            t0 = time.perf_counter()
            token = int(dec.prefill(prompt).argmax())
            t1 = time.perf_counter()
            tokens = []
            for i in range(new_tokens):
                logits = dec.step(token)
                if r == 0 and i == 0:
                    first = logits.float().cpu()
                token = int(logits.argmax())  # the host needs each token, as the grammar does
                tokens.append(token)
            t2 = time.perf_counter()
            prefills.append(t1 - t0)
            runs.append(new_tokens / (t2 - t1))
    out = {
        "kind": kind,
        "decoder": type(dec).__name__,
        "cuda_graph": getattr(dec, "graph", None) is not None,
        "compiled": getattr(dec, "compiled", None) is not None,
        "graph_error": getattr(dec, "graph_error", ""),
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "setup_s": setup,
        "prefill_s": statistics.median(prefills[1:]),
        "tokens_per_s_runs": runs[1:],
        "tokens_per_s": statistics.median(runs[1:]),
    }
    return out, first, tokens


def decode_speed(
    gemma,
    device,
    prompt_tokens: int = 512,
    new_tokens: int = 256,
    repeats: int = 3,
    kind: str = "auto",
    backend="inductor",
) -> dict:
    """Median new tokens/s of decoder `kind` over `repeats` greedy decodes of `new_tokens` after a
    `prompt_tokens` prefill; setup_s is its construction (cache, compile, capture)."""
    return _decode(gemma, device, prompt_tokens, new_tokens, repeats, kind, backend)[0]


def kernel_table(kernels: list[tuple[str, float]], top: int = 12) -> list[dict]:
    """(name, us) per kernel launch -> the `top` names by total time: name (80 chars), count, total_us."""
    by_name: dict[str, list[float]] = {}
    for name, us in kernels:
        by_name.setdefault(name, []).append(us)
    rows = [{"name": n[:80], "count": len(t), "total_us": round(sum(t), 1)} for n, t in by_name.items()]
    return sorted(rows, key=lambda r: -r["total_us"])[:top]


def profile_step(
    gemma,
    device,
    kind: str = "eager",
    prompt_tokens: int = 512,
    new_tokens: int = 256,
    top: int = 12,
    backend="inductor",
) -> dict | str:
    """One decode step under torch.profiler, CUDA activity only (on the CPU: its outermost aten ops): how many
    kernels a token costs and which take the time. "eager": each kernel launched from Python; "compiled": the
    compiled step called as it is (no graph: a replay's kernels are the same ones), at decode_speed's cache
    length so the compile is reused."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    from newbie.prompts.llm_model import make_decoder

    device = torch.device(device)
    dec = make_decoder(gemma, prompt_tokens + new_tokens + 1, device, kind, backend)
    if kind == "compiled" and dec.compiled is None:
        return f"not run: no compiled step ({dec.graph_error})"
    with torch.no_grad():
        token = int(dec.prefill(_prompt(gemma, prompt_tokens)).argmax())
        token = int(dec.step(token).argmax())  # a step first: one-time work stays out of the profile
        dec.tok.fill_(token)
        dec.pos.fill_(dec.n)
        run = (lambda: dec.step(token)) if kind == "eager" else (lambda: dec.run_static(dec.tok, dec.pos))
        _sync(device)
        cuda = device.type == "cuda"  # on the CPU: its outermost ops, for the tests
        with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
            run()
            _sync(device)
    if cuda:
        events = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    else:
        events = [e for e in prof.events() if e.name.startswith("aten::") and e.cpu_parent is None]
    kernels = [
        (e.name, e.time_range.elapsed_us()) for e in events if not e.name.startswith(("Memcpy", "Memset"))
    ]
    return {
        "step": f"{kind}, one token after a {prompt_tokens}-token prefill",
        "kernels_per_token": len(kernels),
        "copies_per_token": len(events) - len(kernels),
        "kernel_us_per_token": round(sum(us for _, us in kernels), 1),
        "top": kernel_table(kernels, top),
    }


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _run_kind(gemma, device, kind: str, new_tokens: int, backend, cap_s: float):
    """(figures, first-step logits, tokens) of one kind, or ({"error": why}, None, None) when it failed or
    ran past its cap. The section's own limit still ends the section."""
    try:
        with time_limit(cap_s, KindTimeout, f"stopped after {cap_s:g} s (the {kind} decoder's cap)"):
            return _decode(gemma, device, 512, new_tokens, 3, kind, backend)
    except KindTimeout as e:
        return {"kind": kind, "error": f"{type(e).__name__}: {e}"}, None, None
    except TimeoutError:
        raise
    except Exception as e:  # noqa: BLE001 - a bench reports why a kind failed and measures the next
        return {"kind": kind, "error": f"{type(e).__name__}: {e}"[:400]}, None, None
    finally:
        _free(device)


def llm_section(
    res: dict,
    gemma,
    device,
    new_tokens: int = 256,
    kinds: tuple[str, ...] = KINDS,
    backend="inductor",
    caps_s: dict[str, float] | None = None,
) -> None:
    """Every decoder kind's tokens/s into res["llm_decode_by_kind"] (each under its own cap), the best one's
    as llm_tokens_per_s (llm_decoder names it) with the bandwidth bound in res["llm_decode"], and on CUDA the
    kernel profiles of one eager and one compiled step there. Results are written as they come: a section
    stopped later keeps them."""
    device = torch.device(device)
    caps = {**CAPS_S, **(caps_s or {})}
    by_kind = res["llm_decode_by_kind"] = {}
    res["llm_decode"] = bound = {"weight_gb": weight_bytes(gemma) / 1e9}
    bound["copy_bandwidth_tb_s"] = copy_bandwidth(device, 2.0 if device.type == "cuda" else 0.02) / 1e12
    # each token reads every weight once: no decoder beats bandwidth / weight bytes at batch 1
    bound["bound_tokens_per_s"] = bound["copy_bandwidth_tb_s"] * 1e3 / bound["weight_gb"]
    reference = None  # the first kind that ran: the others' logits and tokens are compared with it
    for i, kind in enumerate(kinds):
        out, first, tokens = _run_kind(gemma, device, kind, new_tokens, backend, caps.get(kind, 60.0))
        if first is not None and reference is None:
            reference = (kind, first, tokens)
        elif first is not None:
            name, ref_first, ref_tokens = reference
            out[f"max_abs_logit_diff_vs_{name}"] = (first - ref_first).abs().max().item()
            out[f"same_tokens_as_{name}"] = sum(a == b for a, b in zip(tokens, ref_tokens)) / len(tokens)
        by_kind[kind] = out
        _pick_best(res)
        if i == 0:  # the profile between the kinds: cheap, and before the compile that may run out of time
            res["llm_decode"]["profile"] = _profile_or_why(gemma, device, "eager", new_tokens, backend)
        if kind == "compiled" and out.get("compiled"):  # its compile is cached by now: the same shapes
            res["llm_decode"]["profile_compiled"] = _profile_or_why(gemma, device, kind, new_tokens, backend)
    if not any("tokens_per_s" in out for out in by_kind.values()):
        raise RuntimeError(
            "no Gemma decoder ran: " + "; ".join(f"{k}: {v['error']}" for k, v in by_kind.items())
        )


_NOT_A_KINDS = ("weight_gb", "copy_bandwidth_tb_s", "bound_tokens_per_s", "profile", "profile_compiled")


def _pick_best(res: dict) -> None:
    ran = {k: v for k, v in res["llm_decode_by_kind"].items() if "tokens_per_s" in v}
    if not ran:
        return
    best = max(ran, key=lambda k: ran[k]["tokens_per_s"])
    d = res["llm_decode"]
    keep = {k: d[k] for k in _NOT_A_KINDS if k in d}
    d.clear()
    d.update(ran[best], **keep)
    d["pct_of_bound"] = 100 * d["tokens_per_s"] / d["bound_tokens_per_s"]
    res["llm_tokens_per_s"] = d["tokens_per_s"]
    res["llm_decoder"] = best


def _profile_or_why(gemma, device: torch.device, kind: str, new_tokens: int, backend):
    if device.type != "cuda":
        return "not run: the kernel profile is for CUDA"
    try:
        with time_limit(60, KindTimeout, "stopped after 60 s (the profile's cap)"):
            return profile_step(gemma, device, kind, new_tokens=new_tokens, backend=backend)
    except KindTimeout as e:
        return f"failed: {e}"
    except TimeoutError:
        raise
    except Exception as e:  # noqa: BLE001 - the figures stand without it
        return f"failed: {type(e).__name__}: {e}"[:400]
    finally:
        _free(device)

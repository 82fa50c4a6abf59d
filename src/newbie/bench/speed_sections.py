"""The sections of `newbie bench speed`, one function each, in the order `run` calls them. They share one
`SpeedRun`: the arguments, the result dict, the budgeted run and the state one section leaves the next (the
pipeline, the step's inputs, the reference output, the attention backend, whether CUDA graphs paid)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field

import torch

from newbie.bench.compile_child import compile_dit, make_inputs, make_step, run_child
from newbie.bench.speed_measure import (
    _image_tensor,
    _Run,
    _time,
    attention_ms_per_step,
    matmul_tflops,
    psnr,
    step_flops,
    step_flops_exact,
)
from newbie.bench.speed_peers import _diffusers_peers
from newbie.model import fused
from newbie.pipeline.load import load as load_pipeline


@dataclass
class SpeedRun:
    args: object
    res: dict
    R: _Run
    cache_dir: str
    L: int  # caption tokens of the conditional branch
    prompt: str
    kw: dict
    L_uncond: int = 40  # the unconditional caption is shorter, as with an empty negative
    S: dict = field(default_factory=dict)  # state shared between sections


def ceiling(b: SpeedRun) -> None:
    res = b.res
    res["matmul_tflops"] = matmul_tflops()
    print(f"bf16 matmul ceiling {res['matmul_tflops']:.0f} TFLOP/s", flush=True)


def random_qkv(n: int, g: torch.Generator, H: int, HK: int, D: int):
    """Random bf16 q (1, n, H, D) and k, v (1, n, HK, D) on the GPU, drawn from g."""
    return (torch.randn(1, n, h, D, device="cuda", dtype=torch.bfloat16, generator=g) for h in (H, HK, HK))


def attention_tflops(n: int, seconds: float, H: int, D: int) -> float:
    """TFLOP/s of one attention call over n queries and n keys: 4*n^2*D*H (QK^T and PV)."""
    return 4 * n * n * D * H / seconds / 1e12


def sdpa_bnhd(q, k, v):
    """PyTorch's attention on (B, N, H, D) tensors (GQA) -> (B, N, Hq*D)."""
    out = torch.nn.functional.scaled_dot_product_attention(
        *(t.transpose(1, 2) for t in (q, k, v)), enable_gqa=True
    )
    return out.transpose(1, 2).flatten(2)


def attention(b: SpeedRun) -> None:
    """Attention alone at the DiT's shapes (issue 26): PyTorch's backends and our kernels (model/flash.py), in
    TFLOP/s of 4*N^2*D*Hq per call, at 4,352 tokens (1024², 256 caption tokens) and 16,640 (2048²), our bf16
    kernel also per variant (pointer, TMA; attention_tflops_bf16 is the best of ours); the fp8 kernel's
    relative error against fp32 attention and against our bf16 kernel on random inputs."""
    from newbie.model import flash

    res = b.res
    H, HK, D = 24, 8, 96
    table: dict = {}
    for n in (4352, 16640):
        times = fused.time_backends(H, HK, D, n, names=("cudnn", "flash", "triton", "triton-fp8"), reps=20)
        table[n] = {
            k: (attention_tflops(n, v * 1e-3, H, D) if isinstance(v, float) else v)
            for k, v in times.items()
            if k != "auto_is"
        }
    res["attention_tflops"] = table

    def worst(name):
        vals = [row[name] for row in table.values() if isinstance(row.get(name), float)]
        return min(vals) if len(vals) == len(table) else None

    by_variant, res["attention_bf16_auto_ran"] = _bf16_variant_tflops(H, HK, D, tuple(table))
    res["attention_tflops_bf16_by_variant"] = by_variant
    ours = [x for x in (worst("triton"), *by_variant.values()) if isinstance(x, float)]
    res["attention_tflops_bf16"] = max(ours) if ours else None
    res["attention_tflops_fp8"] = worst("triton-fp8")
    res["attention_fp8_kernel"] = fp8_kernel_alone(H, HK, D, tuple(table))
    q, k, v = random_qkv(4352, torch.Generator("cuda").manual_seed(5), H, HK, D)
    exact = sdpa_bnhd(*(t.float() for t in (q, k, v)))

    def rel(x, ref):
        return float((x.float() - ref).norm() / ref.norm())

    if flash.supported(q, k):
        bf = flash.flash96(q, k, v, False)
        res["attention_bf16_rel_err"] = rel(bf, exact)
        f8 = flash.flash96(q, k, v, True)
        res["attention_fp8_rel_err"] = rel(f8, exact)
        res["attention_fp8_rel_err_vs_bf16_kernel"] = rel(f8, bf.float())
    print(f"attention TFLOP/s {json.dumps(table, default=str)[:400]}", flush=True)


def fp8_kernel_alone(H: int, HK: int, D: int, tokens: tuple[int, ...]) -> dict:
    """The fp8 kernel on operands already quantized (attention_tflops' "triton-fp8" includes the eager
    quantization, which a compiled block fuses into the kernels in front of it), and the quantization apart,
    per token count: {"tflops", "ms", "quantize_ms"} or why it did not run."""
    from triton.testing import do_bench

    from newbie.model import flash, flash_triton

    out: dict = {}
    g = torch.Generator("cuda").manual_seed(7)
    for n in tokens:
        q, k, v = random_qkv(n, g, H, HK, D)
        try:
            pre = flash.quantize_fp8(q, k, v)
            ms = do_bench(
                lambda q=q, pre=pre: flash_triton.fp8_from_quantized(q, *pre, block=flash.FP8_BLOCK), rep=200
            )
            qms = do_bench(lambda q=q, k=k, v=v: flash.quantize_fp8(q, k, v), rep=100)
            out[str(n)] = {"tflops": attention_tflops(n, ms * 1e-3, H, D), "ms": ms, "quantize_ms": qms}
        except Exception as e:  # noqa: BLE001 - recorded per count
            out[str(n)] = f"not run: {type(e).__name__}: {str(e)[:160]}"
    return out


def _bf16_variant_tflops(H: int, HK: int, D: int, tokens: tuple[int, ...]) -> tuple[dict, dict]:
    """Each variant of our bf16 kernel ("pointer", "tma": model/flash_variant.py) on its own: its worst
    TFLOP/s over the token counts, or why it did not run; and the variant the auto choice took per count."""
    from newbie.model import flash, flash_variant

    out: dict = {}
    auto_ran: dict = {}
    g = torch.Generator("cuda").manual_seed(6)
    for name in flash_variant.VARIANTS:
        worst = None
        for n in tokens:
            q, k, v = random_qkv(n, g, H, HK, D)
            if not flash.supported(q, k):
                worst = "not available: needs CUDA, Triton and head size 96"
                break
            try:
                flash.attention_bf16(q, k, v, name)
            except Exception as e:  # noqa: BLE001 - reported in place of the number
                worst = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
                break
            if flash_variant.ran(q, k) != name:
                worst = f"not run: {flash_variant.ran(q, k)} instead (TMA not possible here)"
                break
            seconds = _time(lambda q=q, k=k, v=v, name=name: flash.attention_bf16(q, k, v, name), rep=20)
            tflops = attention_tflops(n, seconds, H, D)
            worst = tflops if worst is None else min(worst, tflops)
            flash.attention_bf16(q, k, v)
            auto_ran[n] = flash_variant.ran(q, k)
        out[name] = worst
    return out, auto_ran


def load(b: SpeedRun) -> None:
    res, S, args, L, L_uncond = b.res, b.S, b.args, b.L, b.L_uncond
    t0 = time.perf_counter()
    S["pipe"] = load_pipeline(args.model, device="cuda", dtype="bf16")
    torch.cuda.synchronize()
    res["load_s"] = time.perf_counter() - t0
    dit = S["dit"] = S["pipe"].dit
    x, cond, unc, grid = make_inputs(dit, args.size, L, L_uncond)
    S.update(x=x, cond=cond, unc=unc, grid=grid, step=make_step(dit, x, cond, unc, grid))
    res["flops_per_step"] = step_flops(dit, [L, L_uncond], grid * grid)
    res["flops_per_step_exact"] = step_flops_exact(dit, [L, L_uncond], grid * grid)


def eager(b: SpeedRun) -> None:
    from newbie.model.text import TextEmbeds
    from newbie.sampling.guidance import velocity_fn

    res, S, L = b.res, b.S, b.L
    dit, step, cond, unc, grid, x = (S[k] for k in ("dit", "step", "cond", "unc", "grid", "x"))
    with torch.no_grad():
        res["newbie_eager_s_per_step"] = _time(step, 1, 3)
        pair = TextEmbeds.cat([cond, unc])
        masked = velocity_fn(dit, pair, dit.rope(pair.cap_mask.sum(1), L, grid, grid))
        res["newbie_masked_batch_eager_s_per_step"] = _time(lambda: masked(x, 0.5), 1, 3)
        S["ref_out"] = step()
    print(f"newbie eager {res['newbie_eager_s_per_step']:.4f} s/step", flush=True)


def compiled(b: SpeedRun) -> None:
    res, S, args, L = b.res, b.S, b.args, b.L
    dit, step = S["dit"], S["step"]
    res["attention_backend_ms"] = fused.time_backends(
        dit.cfg.n_heads,
        dit.cfg.n_kv_heads,
        dit.cfg.head_dim,
        args.size**2 // 256 + L,
        names=("auto", "cudnn", "flash", "efficient", "triton", "triton-fp8"),
    )
    bf16_only = {k: v for k, v in res["attention_backend_ms"].items() if k != "triton-fp8"}
    S["backend"] = res["attention_backend"] = fused.choose(bf16_only)
    # the fp8 step takes the fp8 kernel when it runs here and is faster than the bf16 choice
    fp8_ms = res["attention_backend_ms"].get("triton-fp8")
    best = min((v for v in bf16_only.values() if isinstance(v, float)), default=math.inf)
    accurate = res.get("attention_fp8_rel_err", 1.0) < 0.1  # measured by the attention section
    S["backend_fp8"] = (
        "triton-fp8" if isinstance(fp8_ms, float) and fp8_ms < best and accurate else S["backend"]
    )
    t0 = time.perf_counter()
    compile_dit(dit, S["backend"])
    with torch.no_grad():
        step()
    torch.cuda.synchronize()
    res["compile_cold_s"] = res["newbie_compile_s"] = time.perf_counter() - t0
    res["compile_times"] = str(torch._dynamo.utils.compile_times())[:4000]
    S["pipe"].compiled = True
    with torch.no_grad():
        a = _time(step)
        out = step()
        res["newbie_compiled_rel_err"] = float((out - S["ref_out"]).norm() / S["ref_out"].norm())
        g = math.inf
        try:
            graphed = fused.use_cuda_graphs(dit)
            step()
            g = _time(step)
            res["newbie_graphed_rel_err_vs_compiled"] = float((step() - out).norm() / out.norm())
            res["graph_captures"] = graphed.captures
        except RuntimeError as e:  # report; the compiled path goes on without graphs
            res.setdefault("errors", {})["cuda_graphs"] = f"{type(e).__name__}: {e}"[:300]
        fused.use_cuda_graphs(dit, False)
        b = _time(step)  # the compiled step again: the spread between two timings of one version
    res["newbie_compiled_s_per_step_runs"] = [a, b]
    res["newbie_graphed_s_per_step"] = None if g == math.inf else g
    # chosen by measurement for the rest of the run: CUDA graphs or not
    S["graphs"] = g < min(a, b)
    res["cfg_batching_used"] = S["pipe"].cfg_batching
    res["cuda_graphs_used"] = S["graphs"]
    res["newbie_s_per_step"] = min(a, b, g)
    res["newbie_tflops"] = res["flops_per_step"] / res["newbie_s_per_step"] / 1e12
    res["newbie_pct_of_ceiling"] = res["newbie_tflops"] / res["matmul_tflops"]
    print(
        f"newbie compiled {a:.4f}/{b:.4f}, graphed {g:.4f} s/step, compile {res['compile_cold_s']:.1f} s",
        flush=True,
    )


def warm(b: SpeedRun) -> None:
    res, S, args, R, cache_dir = b.res, b.S, b.args, b.R, b.cache_dir
    flags = ["--attention", S["backend"], "--size", str(args.size), "--timeline"]
    # global state is part of inductor's cache key: the child must match this process, as a restarted
    # server matches its predecessor (without it every graph missed the cache)
    flags += ["--tf32"] if torch.backends.cuda.matmul.allow_tf32 else []
    child = run_child(cache_dir, *flags, timeout=max(30, R.left() - 5))
    res["compile_warm_s"] = child["compile_warm_s"]
    res["compile_warm_detail"] = child
    print(f"compile warm (second process) {res['compile_warm_s']:.1f} s", flush=True)


def vae(b: SpeedRun) -> None:
    import copy

    res, S, args = b.res, b.S, b.args
    codec = S["pipe"].codec
    z = torch.randn(1, 16, args.size // 8, args.size // 8, device="cuda")
    out = {"dtype": str(codec.dtype)}
    with torch.no_grad():
        out["eager_s"] = _time(lambda: codec.decode(z), 1, 3)
        ref = codec.decode(z)
        codec.vae.to(memory_format=torch.channels_last)
        out["channels_last_s"] = _time(lambda: codec.decode(z), 1, 3)
        out["channels_last_psnr"] = psnr(codec.decode(z), ref)
        if out["channels_last_s"] > out["eager_s"]:  # keep whichever layout measured faster
            codec.vae.to(memory_format=torch.contiguous_format)
        half = type(codec)(copy.deepcopy(codec.vae).to(torch.bfloat16), codec.cfg)
        out["bf16_s"] = _time(lambda: half.decode(z), 1, 3)
        half.vae.to(memory_format=torch.channels_last)
        out["bf16_channels_last_s"] = _time(lambda: half.decode(z), 1, 3)
        out["bf16_psnr_vs_fp32"] = psnr(half.decode(z), ref)
        half = None
    res["vae_decode"] = out
    res["vae_decode_s"] = min(out["eager_s"], out["channels_last_s"])


def use_graphs(S: dict, dit) -> None:
    fused.use_cuda_graphs(dit, S.get("graphs", False))


def images(b: SpeedRun) -> None:
    res, S, args, prompt, kw = b.res, b.S, b.args, b.prompt, b.kw
    pipe = S["pipe"]
    use_graphs(S, pipe.dit)
    pipe.generate(prompt, steps=2, sampler="euler", cfg_trunc=1.0, **kw)  # warm-up at this size
    pipe.embed_cache.memory.clear()  # whole image = text encode + sampling + decode
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    img = pipe.generate(prompt, steps=18, sampler="midpoint", cfg_trunc=0.25, **kw)
    torch.cuda.synchronize()
    res["image_official_s"] = res["newbie_s_per_image_official_recipe"] = time.perf_counter() - t0
    res["image_official_timings"] = img.timings
    res["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    S["official_img"] = _image_tensor(img.images[0])
    pipe.embed_cache.memory.clear()
    t0 = time.perf_counter()
    img = pipe.generate(prompt, steps=args.steps, sampler="euler", cfg_trunc=1.0, **kw)
    torch.cuda.synchronize()
    res["newbie_s_per_image"] = time.perf_counter() - t0
    res["newbie_image_timings"] = img.timings
    S["euler_img"] = _image_tensor(img.images[0])
    print(
        f"image official {res['image_official_s']:.2f} s, {args.steps} euler {res['newbie_s_per_image']:.2f} s",
        flush=True,
    )


def fp8(b: SpeedRun) -> None:
    from newbie.loading.dit import load_dit
    from newbie.memory.quant import quantize_dit
    from newbie.precision.fp8 import relative_errors

    res, S, prompt, kw = b.res, b.S, b.prompt, b.kw
    pipe = S["pipe"]
    fused.use_cuda_graphs(pipe.dit, False)
    dit8 = load_dit(pipe.folder.transformer, pipe.spec.dit, torch.bfloat16, torch.device("cuda"))
    res["fp8_linears"] = quantize_dit(dit8, "fp8-dynamic")  # newbie's Float8Linear: _scaled_mm, no torchao
    # per layer type, fp8 vs the same bf16 layer on random normal inputs (not the model's activations)
    res["fp8_linear_rel_err_random_inputs"] = relative_errors(pipe.dit, dit8)
    t0 = time.perf_counter()
    res["fp8_attention_backend"] = S.get("backend_fp8", S["backend"])
    compile_dit(dit8, res["fp8_attention_backend"])  # w1|w3 become one fp8 GEMM (FeedForward.fuse)
    step8 = make_step(dit8, S["x"], S["cond"], S["unc"], S["grid"])
    with torch.no_grad():
        step8()
        torch.cuda.synchronize()
        res["fp8_compile_s"] = time.perf_counter() - t0
        a = _time(step8)
        res["newbie_fp8_rel_err_vs_bf16"] = float((step8() - S["ref_out"]).norm() / S["ref_out"].norm())
        fused.use_cuda_graphs(dit8, True)  # measured on its own: fp8 leaves less GPU time to hide launches
        g = _time(step8)
        graphs8 = g < a
        fused.use_cuda_graphs(dit8, graphs8)
    res["newbie_fp8_s_per_step"] = min(a, g)
    if isinstance(res.get("newbie_s_per_step"), float):
        res["fp8_step_ratio_vs_bf16"] = res["newbie_fp8_s_per_step"] / res["newbie_s_per_step"]
    res["newbie_fp8_compiled_graphed_s"] = [a, g]
    res["fp8_cuda_graphs_used"] = graphs8
    res["fp8_attention"] = (
        "e4m3 (our Triton kernel, model/flash.py)"
        if res["fp8_attention_backend"] == "triton-fp8"
        else f"bf16 ({res['fp8_attention_backend']}): the fp8 kernel was not faster here, or not accurate"
    )
    bf16_dit = pipe.dit
    pipe.dit = dit8
    try:
        pipe.generate(prompt, steps=2, sampler="euler", cfg_trunc=1.0, **kw)
        pipe.embed_cache.memory.clear()
        t0 = time.perf_counter()
        img = pipe.generate(prompt, steps=18, sampler="midpoint", cfg_trunc=0.25, **kw)
        torch.cuda.synchronize()
        res["image_official_fp8_s"] = time.perf_counter() - t0
        res["image_official_fp8_timings"] = img.timings
        if "official_img" in S:
            res["image_official_fp8_psnr_vs_bf16"] = psnr(_image_tensor(img.images[0]), S["official_img"])
    finally:
        pipe.dit = bf16_dit
        fused.use_cuda_graphs(dit8, False)
        del dit8, step8
        torch.cuda.empty_cache()
    print(
        f"fp8 {res['newbie_fp8_s_per_step']:.4f} s/step, official image {res.get('image_official_fp8_s')}",
        flush=True,
    )


def sizes(b: SpeedRun) -> None:
    res, S, args, R, L, L_uncond = b.res, b.S, b.args, b.R, b.L, b.L_uncond
    dit = S["dit"]
    table = {}
    res["sizes"] = table
    for size in [int(s) for s in args.sizes.split(",") if s]:
        if R.left() < 12 + (size / 1024) ** 2 * 4:
            table[str(size)] = "not run: device budget"
            continue
        x, cond, unc, grid = make_inputs(dit, size, L, L_uncond)
        step = make_step(dit, x, cond, unc, grid)
        flops = step_flops(dit, [L, L_uncond], grid * grid)
        with torch.no_grad():
            fused.use_cuda_graphs(dit, False)
            torch.cuda.reset_peak_memory_stats()
            c = _time(step, 1, 3)
            peak = torch.cuda.max_memory_allocated() / 2**30
            g = math.inf
            if size <= 1024:  # launch overhead matters only where the step is short
                fused.use_cuda_graphs(dit, True)
                g = _time(step, 1, 3)
                fused.use_cuda_graphs(dit, False)
        s = min(c, g)
        attn = attention_ms_per_step(dit, [L, L_uncond], grid * grid, S.get("backend", "auto")) / 1e3
        table[str(size)] = {
            "tokens_per_branch": [grid * grid + L, grid * grid + L_uncond],
            "s_per_step": s,
            "compiled_s": c,
            "graphed_s": None if g == math.inf else g,
            "tflops": flops / s / 1e12,
            "pct_of_ceiling": flops / s / 1e12 / res["matmul_tflops"],
            "flops_per_step": flops,
            "attention_s": attn,
            "attention_share": attn / s,
            "peak_gib": peak,
        }
        print(f"size {size}: {json.dumps(table[str(size)])}", flush=True)
        R.save()
    use_graphs(S, dit)


def peers(b: SpeedRun) -> None:
    res, S, args, R = b.res, b.S, b.args, b.R
    res["peers"] = peers_out = {}
    if args.no_diffusers:
        peers_out["diffusers"] = "not run: --no-diffusers"
        return
    try:
        import diffusers  # noqa: F401
    except ImportError as e:
        for k in ("diffusers_eager", "diffusers_compiled", "cache_dit_fp8_compiled", "cache_dit_dbcache"):
            peers_out[k] = f"not run: diffusers is not installed ({e})"
        return
    _diffusers_peers(S, res, R)

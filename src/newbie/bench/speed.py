"""`newbie bench speed`: our DiT step and whole generate() against diffusers' Lumina2 (and cache-dit), in
one run on one GPU.

Times, at the same size and inputs: a bf16 matmul ceiling; our CFG step (cond + uncond, the uncond
caption shorter, as with an empty negative) eager, compiled (fast block: measured attention backend, one
w1|w3 GEMM), with CUDA graphs, and with fp8 compute; the compile cold and warm (a second process on the
same on-disk cache); whole images with the official recipe (18 midpoint steps, CFG until t = 0.25, encode
+ decode included) in bf16 and fp8, and 28 Euler steps with CFG on every step; the VAE decode variants; a
scaling table over image sizes; peers (diffusers eager and compiled, cache-dit fp8 + compile, cache-dit's
DBCache against our step cache at matched PSNR on the same trajectory). Every section is timed against
`--budget-s` and stopped at its limit; one that no longer fits is recorded with the reason. The JSON
(bench/results/speed-<device>-<date>.json, and $OUT when set) is rewritten after every section, so a run
cut short still leaves its numbers.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from newbie.bench.time_limit import time_limit
from newbie.errors import NewbieError


def add_parser(bench_sub) -> None:
    p = bench_sub.add_parser("speed", help="time the DiT step and generate() against diffusers (CUDA)")
    p.add_argument("--model", required=True, help="a full-size model folder (random weights are fine)")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--caption-tokens", type=int, default=256)
    p.add_argument("--steps", type=int, default=28)
    p.add_argument("--sizes", default="512,1024,1536,2048", help="scaling table sizes ('' = none)")
    p.add_argument("--no-diffusers", action="store_true")
    p.add_argument("--no-fp8", action="store_true")
    p.add_argument("--budget-s", type=float, default=1e9, help="skip sections that would end past this")
    p.add_argument("--out", default="bench/results")
    p.set_defaults(func=run)


def run_header(note: str, **fields) -> dict:
    """The first keys of a GPU result JSON: device, torch, date, start time (UTC), the given fields, a note."""
    now = datetime.now(timezone.utc)
    return {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "date": now.date().isoformat(),
        "started_utc": now.isoformat(timespec="seconds"),
        **fields,
        "note": note,
    }


def _time(fn, warm: int = 2, rep: int = 5) -> float:
    """Median seconds of fn: CUDA events on a GPU, the host clock without one (CPU tests of the sections)."""
    cuda = torch.cuda.is_available()
    for _ in range(warm):
        fn()
    _sync(cuda)
    times = []
    for _ in range(rep):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def _sync(cuda) -> None:
    if cuda is True or getattr(cuda, "type", None) == "cuda":
        torch.cuda.synchronize()


def matmul_tflops(n: int = 8192) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    # 3 warm-ups and the median of 10, as in issue 6's run: the rate at boost clocks. After a second of
    # back-to-back products the card reads lower (power-limited on random data; docs/benchmarks.md)
    return 2 * n**3 / _time(lambda: a @ b, 3, 10) / 1e12


def step_flops(dit, cap_lens: list[int], image_tokens: int) -> float:
    """Linear layers 2·params·tokens plus attention 4·n²·dim per joint/refiner layer, per sample.

    The count of issue 6, kept so numbers stay comparable: it charges every block parameter per token, the
    per-sample adaLN projection too (see `step_flops_exact`)."""
    cfg = dit.cfg
    block_params = sum(p.numel() for p in dit.layers[0].parameters())
    total = 0.0
    for cap in cap_lens:
        n = cap + image_tokens
        total += 2 * block_params * (cfg.n_layers * n + cfg.n_refiner_layers * (image_tokens + cap))
        total += 4 * cfg.dim * (cfg.n_layers * n * n + cfg.n_refiner_layers * (image_tokens**2 + cap**2))
    return total


def step_flops_exact(dit, cap_lens: list[int], image_tokens: int) -> float:
    """As step_flops, but the adaLN projection once per sample and block, not per token (and the caption
    refiner has none)."""
    cfg = dit.cfg
    block = dit.layers[0]
    ada = sum(p.numel() for p in block.adaLN_modulation.parameters())
    per_token = sum(p.numel() for p in block.parameters()) - ada
    total = 0.0
    for cap in cap_lens:
        n = cap + image_tokens
        total += 2 * per_token * (cfg.n_layers * n + cfg.n_refiner_layers * (image_tokens + cap))
        total += 2 * ada * (cfg.n_layers + cfg.n_refiner_layers)
        total += 4 * cfg.dim * (cfg.n_layers * n * n + cfg.n_refiner_layers * (image_tokens**2 + cap**2))
    return total


def attention_ms_per_step(dit, cap_lens: list[int], image_tokens: int, backend: str) -> float:
    """Attention kernel time of one CFG step, from timing the kernel alone at each sequence length."""
    from newbie.model.fused import time_backends

    cfg = dit.cfg
    total = 0.0
    calls: dict[int, int] = {}
    for cap in cap_lens:
        for n, k in (
            (cap + image_tokens, cfg.n_layers),
            (image_tokens, cfg.n_refiner_layers),
            (cap, cfg.n_refiner_layers),
        ):
            calls[n] = calls.get(n, 0) + k
    name = backend
    for n, k in calls.items():
        ms = time_backends(cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, n, names=(name,))[name]
        total += k * (ms if isinstance(ms, float) else math.nan)
    return total


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def _image_tensor(img) -> torch.Tensor:
    import numpy as np

    return torch.from_numpy(np.asarray(img).astype("float32") / 255.0)


class _Run:
    """Sections against a time budget; the JSON is rewritten after each one."""

    def __init__(self, res: dict, paths: list[Path], budget_s: float):
        self.res, self.paths, self.t0, self.budget = res, paths, time.perf_counter(), budget_s

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t0)

    def save(self) -> None:
        self.res["bench_elapsed_s"] = time.perf_counter() - self.t0
        text = json.dumps(self.res, indent=1, default=str)
        for p in self.paths:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)

    def section(self, name: str, need_s: float, fn, limit_s: float | None = None) -> bool:
        """Run fn unless fewer than need_s seconds are left; stop it after limit_s (default: what is left of
        the budget), so one slow or hung section cannot take the run's other numbers with it; record failures
        with the reason and go on."""
        if self.left() < need_s:
            why = f"not run: {self.left():.0f} s of the device budget left, the section needs ~{need_s:.0f} s"
            self.res.setdefault("skipped", {})[name] = why
            print(f"skip {name}", flush=True)
            self.save()
            return False
        limit = max(1.0, min(limit_s or math.inf, self.left()))
        t = time.perf_counter()
        ok = True
        try:
            with time_limit(limit, message=f"stopped after {limit:.0f} s (section limit)"):
                fn()
        except Exception as e:  # noqa: BLE001 - a bench reports why a section failed, and goes on
            import traceback

            traceback.print_exc()
            self.res.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"[:400]
            ok = False
        self.res.setdefault("section_s", {})[name] = round(time.perf_counter() - t, 1)
        print(f"[{time.perf_counter() - self.t0:6.1f} s] {name} {'done' if ok else 'FAILED'}", flush=True)
        self.save()
        return ok


def run(args) -> int:
    if not torch.cuda.is_available():
        raise NewbieError("newbie bench speed needs a CUDA GPU")
    from newbie.bench.compile_child import compile_dit, make_inputs, make_step, run_child
    from newbie.model import fused
    from newbie.pipeline.pipeline import load as load_pipeline

    torch.backends.cuda.matmul.allow_tf32 = True
    torch._dynamo.config.cache_size_limit = 64  # bf16 + fp8 blocks, modulated or not, static and dynamic
    torch._dynamo.config.accumulated_cache_size_limit = 1024
    res: dict = run_header(
        "random weights at the real shapes: speed only, not picture quality",
        size=args.size,
        caption_tokens=args.caption_tokens,
    )
    name = res["device"].replace("NVIDIA ", "").replace(" ", "-").lower()
    fname = f"speed-{name}-{res['date']}.json"
    paths = [Path(args.out) / fname] + ([Path(os.environ["OUT"]) / fname] if os.environ.get("OUT") else [])
    R = _Run(res, paths, args.budget_s)
    cache_dir = fused.compile_cache(
        os.environ.get("NEWBIE_BENCH_CACHE", f"/tmp/newbie-inductor-{os.getpid()}")
    )
    res["compile_cache_dir"] = cache_dir
    S: dict = {}  # state shared between sections
    L, L_uncond = args.caption_tokens, 40
    prompt = (
        "<character_1> <n>$character_1$</n> <gender>1girl</gender> <appearance>red_hair</appearance> "
        "</character_1> " + ", ".join(f"tag{i}" for i in range(200))
    )
    kw = {"seed": 1, "width": args.size, "height": args.size}

    def ceiling():
        res["matmul_tflops"] = matmul_tflops()
        print(f"bf16 matmul ceiling {res['matmul_tflops']:.0f} TFLOP/s", flush=True)

    def load():
        t0 = time.perf_counter()
        S["pipe"] = load_pipeline(args.model, device="cuda", dtype="bf16")
        torch.cuda.synchronize()
        res["load_s"] = time.perf_counter() - t0
        dit = S["dit"] = S["pipe"].dit
        x, cond, unc, grid = make_inputs(dit, args.size, L, L_uncond)
        S.update(x=x, cond=cond, unc=unc, grid=grid, step=make_step(dit, x, cond, unc, grid))
        res["flops_per_step"] = step_flops(dit, [L, L_uncond], grid * grid)
        res["flops_per_step_exact"] = step_flops_exact(dit, [L, L_uncond], grid * grid)

    def eager():
        from newbie.model.text import TextEmbeds
        from newbie.sampling.guidance import velocity_fn

        dit, step, cond, unc, grid, x = (S[k] for k in ("dit", "step", "cond", "unc", "grid", "x"))
        with torch.no_grad():
            res["newbie_eager_s_per_step"] = _time(step, 1, 3)
            pair = TextEmbeds.cat([cond, unc])
            masked = velocity_fn(dit, pair, dit.rope(pair.cap_mask.sum(1), L, grid, grid))
            res["newbie_masked_batch_eager_s_per_step"] = _time(lambda: masked(x, 0.5), 1, 3)
            S["ref_out"] = step()
        print(f"newbie eager {res['newbie_eager_s_per_step']:.4f} s/step", flush=True)

    def compiled():
        dit, step = S["dit"], S["step"]
        res["attention_backend_ms"] = fused.time_backends(
            dit.cfg.n_heads, dit.cfg.n_kv_heads, dit.cfg.head_dim, args.size**2 // 256 + L
        )
        S["backend"] = res["attention_backend"] = fused.choose(res["attention_backend_ms"])
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

    def warm():
        flags = ["--attention", S["backend"], "--size", str(args.size), "--timeline"]
        # global state is part of inductor's cache key: the child must match this process, as a restarted
        # server matches its predecessor (without it every graph missed the cache)
        flags += ["--tf32"] if torch.backends.cuda.matmul.allow_tf32 else []
        child = run_child(cache_dir, *flags, timeout=max(30, R.left() - 5))
        res["compile_warm_s"] = child["compile_warm_s"]
        res["compile_warm_detail"] = child
        print(f"compile warm (second process) {res['compile_warm_s']:.1f} s", flush=True)

    def vae():
        import copy

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

    def use_graphs(dit):
        fused.use_cuda_graphs(dit, S.get("graphs", False))

    def images():
        pipe = S["pipe"]
        use_graphs(pipe.dit)
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

    def fp8():
        from newbie.loading.dit import load_dit
        from newbie.memory.quant import quantize_dit
        from newbie.precision.fp8 import relative_errors

        pipe = S["pipe"]
        fused.use_cuda_graphs(pipe.dit, False)
        dit8 = load_dit(pipe.folder.transformer, pipe.spec.dit, torch.bfloat16, torch.device("cuda"))
        res["fp8_linears"] = quantize_dit(
            dit8, "fp8-dynamic"
        )  # newbie's Float8Linear: _scaled_mm, no torchao
        # per layer type, fp8 vs the same bf16 layer on random normal inputs (not the model's activations)
        res["fp8_linear_rel_err_random_inputs"] = relative_errors(pipe.dit, dit8)
        t0 = time.perf_counter()
        compile_dit(dit8, S["backend"])  # w1|w3 become one fp8 GEMM (FeedForward.fuse)
        step8 = make_step(dit8, S["x"], S["cond"], S["unc"], S["grid"])
        with torch.no_grad():
            step8()
            torch.cuda.synchronize()
            res["fp8_compile_s"] = time.perf_counter() - t0
            a = _time(step8)
            res["newbie_fp8_rel_err_vs_bf16"] = float((step8() - S["ref_out"]).norm() / S["ref_out"].norm())
            fused.use_cuda_graphs(
                dit8, True
            )  # measured on its own: fp8 leaves less GPU time to hide launches
            g = _time(step8)
            graphs8 = g < a
            fused.use_cuda_graphs(dit8, graphs8)
        res["newbie_fp8_s_per_step"] = min(a, g)
        res["newbie_fp8_compiled_graphed_s"] = [a, g]
        res["fp8_cuda_graphs_used"] = graphs8
        res["fp8_attention"] = (
            "bf16: PyTorch's SDPA has no fp8 path on this machine (cuDNN fp8 attention "
            "is not exposed through torch 2.11; no FlashAttention-3 package)"
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

    def sizes():
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
        use_graphs(dit)

    def peers():
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

    R.section("ceiling", 5, ceiling)
    if not R.section("load", 30, load):
        return 1
    R.section("eager", 10, eager)
    if not R.section("compiled", 45, compiled):
        return 1
    R.section("compile_warm", 40, warm)
    R.section("vae", 10, vae)
    R.section("images", 20, images)
    # fp8 right after the bf16 images (native Float8Linear compiles in a fraction of the limit), with its own
    # limit all the same
    if args.no_fp8:
        res["newbie_fp8_s_per_step"] = res["image_official_fp8_s"] = "not run: --no-fp8"
    elif not R.section("fp8", 45, fp8, limit_s=150):
        why = res.get("skipped", {}).get("fp8") or res.get("errors", {}).get("fp8")
        res.setdefault("newbie_fp8_s_per_step", f"not run: {why}")
        res.setdefault("image_official_fp8_s", f"not run: {why}")
    R.section("sizes", 15, sizes)
    R.section("peers", 8, peers)
    R.section("step_cache", 12, lambda: _cache_comparison(S, res, R, args.steps))
    res.setdefault("peers", {})
    if "lumina2" in S:
        R.section("diffusers_compiled", 30, lambda: _diffusers_compiled(S, res, R))
    if "cache_dit_fp8_compiled" not in res["peers"]:
        if importlib.util.find_spec("cache_dit") is None:
            res["peers"]["cache_dit_fp8_compiled"] = "not run: cache-dit is not installed"
        elif not R.section("cache_dit_fp8", 25, lambda: _cache_dit_fp8(S, res, R), limit_s=90):
            res["peers"].setdefault(
                "cache_dit_fp8_compiled",
                res.get("skipped", {}).get("cache_dit_fp8") or res["errors"]["cache_dit_fp8"],
            )
    for k, section in (("diffusers_compiled", "diffusers_compiled"), ("cache_dit_dbcache", "step_cache")):
        if k not in res["peers"]:
            res["peers"][k] = (
                res.get("skipped", {}).get(section)
                or res.get("errors", {}).get(section)
                or "not run: device budget"
            )
    if "diffusers_eager_s_per_step" in res:
        res["speedup_vs_diffusers_eager"] = res["diffusers_eager_s_per_step"] / res["newbie_s_per_step"]
    if "diffusers_compiled_s_per_step" in res:
        res["speedup_vs_diffusers_compiled"] = res["diffusers_compiled_s_per_step"] / res["newbie_s_per_step"]
    res["targets"] = _targets(res)
    R.save()
    _print_table(res)
    print(paths[0])
    return 0


def lumina2_like(cfg, sample_size: int = 128):
    """diffusers' Lumina2 transformer with our DiTConfig's shapes (random weights, fp32, CPU): the peer of
    the speed bench and the twin of the parity test."""
    from diffusers import Lumina2Transformer2DModel

    return Lumina2Transformer2DModel(
        sample_size=sample_size,
        patch_size=cfg.patch_size,
        in_channels=cfg.in_channels,
        hidden_size=cfg.dim,
        num_layers=cfg.n_layers,
        num_refiner_layers=cfg.n_refiner_layers,
        num_attention_heads=cfg.n_heads,
        num_kv_heads=cfg.n_kv_heads,
        multiple_of=cfg.multiple_of,
        ffn_dim_multiplier=None,
        norm_eps=cfg.norm_eps,
        axes_dim_rope=cfg.axes_dims,
        axes_lens=cfg.axes_lens,
        cap_feat_dim=cfg.cap_feat_dim,
    )


def _lumina2(dit):
    """diffusers' Lumina2 at our DiT's shapes, random weights, on its device and dtype."""
    p = next(dit.parameters())
    with torch.device(p.device):
        return lumina2_like(dit.cfg).to(p.dtype).eval()


def _diffusers_inputs(S):
    """The latent and captions of our step in diffusers' layout: one padded batch with a caption mask."""
    cond, unc, x = S["cond"], S["unc"], S["x"]
    L = cond.cap_feats.shape[1]
    caps = cond.cap_feats.new_zeros(2, L, cond.cap_feats.shape[2])
    caps[0] = cond.cap_feats[0]
    caps[1, : unc.cap_feats.shape[1]] = unc.cap_feats[0]
    mask = torch.zeros(2, L, dtype=torch.bool, device=x.device)
    mask[0] = True
    mask[1, : unc.cap_feats.shape[1]] = True
    return caps, mask, x


def _diffusers_step(S, model):
    """One CFG step of diffusers' model on our step's inputs (one padded, masked batch of two), as fwd()."""
    caps, mask, x = _diffusers_inputs(S)
    xx = x.repeat(2, 1, 1, 1).to(caps.dtype)
    t = torch.full((2,), 0.5, device=x.device, dtype=caps.dtype)
    return lambda: model(xx, t, caps, mask, return_dict=False)[0]


def _diffusers_peers(S, res, R) -> None:
    """diffusers' Lumina2 eager at our shapes; the model stays for DBCache, compile and cache-dit fp8."""
    peers = res["peers"]
    model = S["lumina2"] = _lumina2(S["dit"])
    fwd = _diffusers_step(S, model)

    with torch.no_grad():
        res["diffusers_eager_s_per_step"] = peers["diffusers_eager"] = _time(fwd, 1, 3)
        print(f"diffusers eager {peers['diffusers_eager']:.4f} s/step", flush=True)


def _diffusers_compiled(S, res, R) -> None:
    peers = res["peers"]
    model = S.get("lumina2")
    if model is None:
        peers["diffusers_compiled"] = "not run: the diffusers model did not build"
        return
    fwd = _diffusers_step(S, model)

    with torch.no_grad():
        # regional compile, as diffusers recommends (its compile_repeated_blocks; Lumina2 in diffusers 0.42
        # does not declare _repeated_blocks, so the blocks are named here)
        t0 = time.perf_counter()
        for m in model.modules():
            if type(m).__name__ == "Lumina2TransformerBlock":
                m.compile()
        fwd()
        _sync(S["x"].device)
        res["diffusers_compile_s"] = time.perf_counter() - t0
        res["diffusers_compiled_s_per_step"] = peers["diffusers_compiled"] = _time(fwd, 1, 5)
        print(
            f"diffusers compiled {peers['diffusers_compiled']:.4f} s/step (compile {res['diffusers_compile_s']:.1f} s)",
            flush=True,
        )


def _cache_dit_fp8(S, res, R) -> None:
    peers = res["peers"]
    model = S.pop("lumina2", None)
    if model is None:
        peers["cache_dit_fp8_compiled"] = "not run: the diffusers model did not build"
        return
    import cache_dit

    fwd = _diffusers_step(S, model)

    res["cache_dit_version"] = getattr(cache_dit, "__version__", "?")
    # diffusers' ModelMixin declares `_repeated_blocks = []`, which cache-dit reads before its config's list
    model._repeated_blocks = ["Lumina2TransformerBlock"]
    with torch.no_grad():
        cache_dit.quantize(
            model,
            cache_dit.QuantizeConfig(
                quant_type="float8_per_row", repeated_blocks=["Lumina2TransformerBlock"]
            ),
        )
        cache_dit.set_compile_configs()
        t0 = time.perf_counter()
        fwd()
        _sync(S["x"].device)
        res["cache_dit_fp8_compile_s"] = time.perf_counter() - t0
        peers["cache_dit_fp8_compiled"] = _time(fwd, 1, 5)
    print(f"cache-dit fp8 + compile {peers['cache_dit_fp8_compiled']:.4f} s/step", flush=True)
    model = None
    torch.cuda.empty_cache()


def _trajectory(pair_fn, x: torch.Tensor, steps: int, cfg: float = 5.0) -> torch.Tensor:
    """Euler over sigma 1 -> 0 with CFG on every step; pair_fn(x, sigma) -> [cond; uncond] dx/dsigma."""
    sig = torch.linspace(1.0, 0.0, steps + 1).tolist()
    x = x.float()
    for i in range(steps):
        c, u = pair_fn(x, sig[i]).float().chunk(2)
        x = x + (sig[i + 1] - sig[i]) * (u + cfg * (c - u))
    return x


def _cache_comparison(S, res, R, steps: int) -> None:
    """Our first-block step cache and cache-dit's DBCache (F1B0: also the first block decides), each against
    its own uncached run on the same trajectory (same noise, captions, Euler steps, CFG 5), image PSNR through
    our VAE; the PSNR-matched pair is the one to compare."""
    from newbie.model import fused
    from newbie.model.step_cache import AUTO, StepCache
    from newbie.sampling.guidance import split_pair, velocity_fn

    pipe, dit, cond, unc, grid, x = (S[k] for k in ("pipe", "dit", "cond", "unc", "grid", "x"))
    fused.use_cuda_graphs(dit, False)  # the step cache syncs with the host: plain compiled forward
    rc = dit.rope(cond.cap_mask.sum(1), cond.cap_feats.shape[1], grid, grid)
    ru = dit.rope(unc.cap_mask.sum(1), unc.cap_feats.shape[1], grid, grid)

    def decode(z):
        return pipe.codec.decode(z)[0].permute(1, 2, 0).cpu()

    out: dict = {"steps": steps, "cfg": 5.0, "sampler": "euler"}
    res["cache_comparison"] = out

    def ours(threshold):
        setting = AUTO if threshold == "auto" else threshold
        caches = [StepCache.of(setting), StepCache.of(setting)] if setting else [None, None]
        pair = split_pair(velocity_fn(dit, cond, rc, caches[0]), velocity_fn(dit, unc, ru, caches[1]))
        _sync(x.device)
        t0 = time.perf_counter()
        z = _trajectory(pair, x, steps)
        _sync(x.device)
        hits = sum(c.hits for c in caches if c)
        return z, time.perf_counter() - t0, hits

    with torch.no_grad():
        z_ref, t_ref, _ = ours(0.0)
        img_ref = decode(z_ref)
        out["newbie_uncached_s"] = t_ref
        for th in (0.05, 0.1, "auto"):  # auto: --step-cache auto's policy (model/step_cache.py)
            z, secs, hits = ours(th)
            entry = {
                "s": secs,
                "speedup": t_ref / secs,
                "psnr": psnr(decode(z), img_ref),
                "reused_calls": hits,
                "calls": 2 * steps,
            }
            out[f"newbie_step_cache_{th}"] = entry
            res[f"step_cache_{th}"] = {
                "s_per_trajectory": secs,
                "speedup": entry["speedup"],
                "psnr_vs_uncached": entry["psnr"],
                "reused_calls": hits,
                "calls": 2 * steps,
            }
            R.save()
        try:
            import cache_dit
            from cache_dit import DBCacheConfig
        except ImportError as e:
            res.setdefault("peers", {})["cache_dit_dbcache"] = f"not run: cache-dit not installed ({e})"
            return
        if R.left() < 25:
            res.setdefault("peers", {})["cache_dit_dbcache"] = "not run: device budget"
            return
        # eager: cache-dit's hooks go on before any compile
        model = S["lumina2"] if S.get("lumina2") is not None else _lumina2(dit)
        caps, mask, _ = _diffusers_inputs(S)

        def pair_fn(z, sigma):
            t = torch.full((2,), 1.0 - sigma, device=z.device, dtype=caps.dtype)
            return -model(z.repeat(2, 1, 1, 1).to(caps.dtype), t, caps, mask, return_dict=False)[0]

        def theirs(threshold):
            if threshold:
                cache_dit.enable_cache(
                    model,
                    cache_config=DBCacheConfig(
                        Fn_compute_blocks=1,
                        Bn_compute_blocks=0,
                        residual_diff_threshold=threshold,
                        max_warmup_steps=2,
                        num_inference_steps=steps,
                        enable_separate_cfg=False,
                    ),
                )
            _sync(x.device)
            t0 = time.perf_counter()
            z = _trajectory(pair_fn, x, steps)
            _sync(x.device)
            secs = time.perf_counter() - t0
            cached = None
            if threshold:
                stats = cache_dit.summary(model)
                cached = len(stats[0].cached_steps) if stats else None
                cache_dit.disable_cache(model)
            return z, secs, cached

        z_ref, t_ref, _ = theirs(0.0)
        img_ref = decode(z_ref)
        out["diffusers_eager_uncached_s"] = t_ref
        best = None
        for th in (0.1,):  # the same threshold as ours: both measure the first block's relative L1 change
            if R.left() < t_ref + 8:
                res.setdefault("peers", {})["cache_dit_dbcache"] = "not run: device budget"
                break
            z, secs, cached = theirs(th)
            entry = {
                "s": secs,
                "speedup": t_ref / secs,
                "psnr": psnr(decode(z), img_ref),
                "cached_steps": cached,
            }
            out[f"cache_dit_dbcache_{th}"] = entry
            ours_match = min(
                (v for k, v in out.items() if k.startswith("newbie_step_cache_")),
                key=lambda v: abs(v["psnr"] - entry["psnr"]),
            )
            if best is None or abs(ours_match["psnr"] - entry["psnr"]) < best[0]:
                best = (abs(ours_match["psnr"] - entry["psnr"]), th, entry, ours_match)
            R.save()
        if best:
            _, th, entry, mine = best
            out["matched"] = {
                "cache_dit_threshold": th,
                "cache_dit_speedup": entry["speedup"],
                "cache_dit_psnr": entry["psnr"],
                "newbie_speedup": mine["speedup"],
                "newbie_psnr": mine["psnr"],
            }
            res.setdefault("peers", {})["cache_dit_dbcache"] = entry["s"] / steps
        model = None
        torch.cuda.empty_cache()


TARGETS = {  # issue 15, H200
    "bf16 step <= 0.100 s": ("newbie_s_per_step", lambda v: v <= 0.100),
    "bf16 step >= 86% of ceiling": ("newbie_pct_of_ceiling", lambda v: v >= 0.86),
    "2048² step >= 80% of ceiling": (("sizes", "2048", "pct_of_ceiling"), lambda v: v >= 0.80),
    "fp8 step <= 0.075 s": ("newbie_fp8_s_per_step", lambda v: v <= 0.075),
    "official image bf16 <= 2.9 s": ("image_official_s", lambda v: v <= 2.9),
    "official image fp8 <= 2.3 s": ("image_official_fp8_s", lambda v: v <= 2.3),
    "compile cold <= 20 s": ("compile_cold_s", lambda v: v <= 20),
    "compile warm <= 5 s": ("compile_warm_s", lambda v: v <= 5),
}


def _targets(res: dict) -> dict:
    out = {}
    for name, (key, ok) in TARGETS.items():
        v = res
        for k in key if isinstance(key, tuple) else (key,):
            v = v.get(k) if isinstance(v, dict) else None
        out[name] = (
            {"value": v, "met": bool(ok(v))} if isinstance(v, (int, float)) else {"value": v, "met": None}
        )
    return out


def _print_table(res: dict) -> None:
    rows = [
        ("bf16 matmul ceiling (TFLOP/s)", res.get("matmul_tflops")),
        ("newbie eager s/step", res.get("newbie_eager_s_per_step")),
        ("newbie compiled s/step", res.get("newbie_s_per_step")),
        ("newbie graphed s/step", res.get("newbie_graphed_s_per_step")),
        ("compile cold s", res.get("compile_cold_s")),
        ("compile warm s", res.get("compile_warm_s")),
        ("newbie % of ceiling", res.get("newbie_pct_of_ceiling")),
        ("newbie fp8 s/step", res.get("newbie_fp8_s_per_step")),
        ("diffusers eager s/step", res.get("diffusers_eager_s_per_step")),
        ("diffusers compiled s/step", res.get("diffusers_compiled_s_per_step")),
        ("image official s", res.get("image_official_s")),
        ("image official fp8 s", res.get("image_official_fp8_s")),
        ("newbie s/image (28 euler)", res.get("newbie_s_per_image")),
        ("peak GiB", res.get("peak_gib")),
    ]
    for name, value in rows:
        print(f"{name:<34} {f'{value:.4f}' if isinstance(value, (int, float)) else '-'}")
    for name, t in res.get("targets", {}).items():
        print(f"target {name:<32} {t['met']}")

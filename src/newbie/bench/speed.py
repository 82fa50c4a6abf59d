"""`newbie bench speed`: our DiT step and whole generate() against diffusers' Lumina2, in one run on one GPU.

Times, at the same size and inputs: a bf16 matmul ceiling; our CFG step (cond + uncond, the uncond caption
shorter, as with an empty negative) eager, compiled, and with fp8 compute; diffusers Lumina2 eager and
compiled; whole images (28 Euler steps with CFG on every step, and the official 18 midpoint / cfg_trunc 0.25
recipe); the first-block step cache's speed-up and PSNR. Writes bench/results/speed-<device>-<date>.json.
"""

from __future__ import annotations

import json
import math
import time
from datetime import date
from pathlib import Path

import torch

from newbie.errors import NewbieError


def add_parser(bench_sub) -> None:
    p = bench_sub.add_parser("speed", help="time the DiT step and generate() against diffusers (CUDA)")
    p.add_argument("--model", required=True, help="a full-size model folder (random weights are fine)")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--caption-tokens", type=int, default=256)
    p.add_argument("--steps", type=int, default=28)
    p.add_argument("--no-diffusers", action="store_true")
    p.add_argument("--no-fp8", action="store_true")
    p.add_argument("--out", default="bench/results")
    p.set_defaults(func=run)


def _time(fn, warm: int = 2, rep: int = 5) -> float:
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(rep):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return sorted(times)[len(times) // 2]


def matmul_tflops(n: int = 8192) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    return 2 * n**3 / _time(lambda: a @ b, 3, 10) / 1e12


def step_flops(dit, cap_lens: list[int], image_tokens: int) -> float:
    """Linear layers 2·params·tokens plus attention 4·n²·dim per joint/refiner layer, per sample."""
    cfg = dit.cfg
    block_params = sum(p.numel() for p in dit.layers[0].parameters())
    total = 0.0
    for cap in cap_lens:
        n = cap + image_tokens
        total += 2 * block_params * (cfg.n_layers * n + cfg.n_refiner_layers * (image_tokens + cap))
        total += 4 * cfg.dim * (cfg.n_layers * n * n + cfg.n_refiner_layers * (image_tokens**2 + cap**2))
    return total


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def _image_tensor(img) -> torch.Tensor:
    import numpy as np

    return torch.from_numpy(np.asarray(img).astype("float32") / 255.0)


def run(args) -> int:
    if not torch.cuda.is_available():
        raise NewbieError("newbie bench speed needs a CUDA GPU")
    import newbie
    from newbie.model.text import TextEmbeds
    from newbie.sampling.guidance import split_pair, velocity_fn

    torch.backends.cuda.matmul.allow_tf32 = True
    res: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "date": date.today().isoformat(),
                 "size": args.size, "caption_tokens": args.caption_tokens,
                 "note": "random weights at the real shapes: speed only, not picture quality"}
    res["matmul_tflops"] = matmul_tflops()
    print(f"bf16 matmul ceiling {res['matmul_tflops']:.0f} TFLOP/s", flush=True)

    t0 = time.perf_counter()
    pipe = newbie.load(args.model, device="cuda", dtype="bf16")
    torch.cuda.synchronize()
    res["load_s"] = time.perf_counter() - t0
    dit = pipe.dit
    lat = args.size // 8
    grid = lat // 2
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(1, 16, lat, lat, device="cuda", generator=gen)
    L, L_uncond = args.caption_tokens, 40
    cond = TextEmbeds(torch.randn(1, L, dit.cfg.cap_feat_dim, device="cuda", generator=gen).bfloat16(),
                      torch.ones(1, L, dtype=torch.bool, device="cuda"),
                      torch.randn(1, dit.cfg.clip_text_dim, device="cuda", generator=gen).bfloat16())
    unc = TextEmbeds(cond.cap_feats[:, :L_uncond] * 0.5, cond.cap_mask[:, :L_uncond], cond.pooled * 0.5)
    res["flops_per_step"] = step_flops(dit, [L, L_uncond], grid * grid)

    def our_step():
        rc = dit.rope(cond.cap_mask.sum(1), L, grid, grid)
        ru = dit.rope(unc.cap_mask.sum(1), L_uncond, grid, grid)
        return split_pair(velocity_fn(dit, cond, rc), velocity_fn(dit, unc, ru))

    def masked_step():
        pair = TextEmbeds.cat([cond, unc])
        return velocity_fn(dit, pair, dit.rope(pair.cap_mask.sum(1), L, grid, grid))

    with torch.no_grad():
        step = our_step()
        res["newbie_eager_s_per_step"] = _time(lambda: step(x, 0.5))
        res["newbie_masked_batch_eager_s_per_step"] = _time(lambda: masked_step()(x, 0.5))
        print(f"newbie eager {res['newbie_eager_s_per_step']:.4f} s/step "
              f"(masked batch {res['newbie_masked_batch_eager_s_per_step']:.4f})", flush=True)
        ref_out = step(x, 0.5)

        t0 = time.perf_counter()
        for block in dit.blocks():
            block.compile(dynamic=None, fullgraph=True)
        pipe.compiled = True
        step(x, 0.5)
        torch.cuda.synchronize()
        res["newbie_compile_s"] = time.perf_counter() - t0
        res["newbie_s_per_step"] = _time(lambda: step(x, 0.5))
        res["newbie_compiled_rel_err"] = float((step(x, 0.5) - ref_out).norm() / ref_out.norm())
        print(f"newbie compiled {res['newbie_s_per_step']:.4f} s/step, compile {res['newbie_compile_s']:.1f} s",
              flush=True)
    res["newbie_tflops"] = res["flops_per_step"] / res["newbie_s_per_step"] / 1e12
    res["newbie_pct_of_ceiling"] = res["newbie_tflops"] / res["matmul_tflops"]

    # whole images
    prompt = "<character_1> <n>$character_1$</n> <gender>1girl</gender> <appearance>red_hair</appearance> " \
             "</character_1> " + ", ".join(f"tag{i}" for i in range(200))
    kw = dict(seed=1, width=args.size, height=args.size)
    pipe.generate(prompt, steps=2, sampler="euler", cfg_trunc=1.0, **kw)  # warm-up at this size
    pipe.embed_cache.memory.clear()  # whole image = text encode + sampling + decode
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    img = pipe.generate(prompt, steps=args.steps, sampler="euler", cfg_trunc=1.0, **kw)
    torch.cuda.synchronize()
    res["newbie_s_per_image"] = time.perf_counter() - t0
    res["newbie_image_timings"] = img.timings
    res["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    pipe.embed_cache.memory.clear()
    t0 = time.perf_counter()
    pipe.generate(prompt, steps=18, sampler="midpoint", cfg_trunc=0.25, **kw)
    torch.cuda.synchronize()
    res["newbie_s_per_image_official_recipe"] = time.perf_counter() - t0
    print(f"image {res['newbie_s_per_image']:.2f} s ({args.steps} euler, CFG every step); official recipe "
          f"{res['newbie_s_per_image_official_recipe']:.2f} s; peak {res['peak_gib']:.1f} GiB", flush=True)

    # first-block step cache
    ref_img = _image_tensor(img.images[0])
    for threshold in (0.05, 0.1):
        pipe.step_cache = threshold
        t0 = time.perf_counter()
        cached = pipe.generate(prompt, steps=args.steps, sampler="euler", cfg_trunc=1.0, **kw)
        torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        hits = sum(c.hits for c in pipe.last_caches)
        calls = sum(c.calls for c in pipe.last_caches)
        res[f"step_cache_{threshold}"] = {"s_per_image": secs, "speedup": res["newbie_s_per_image"] / secs,
                                          "psnr_vs_uncached": psnr(_image_tensor(cached.images[0]), ref_img),
                                          "reused_calls": hits, "calls": calls}
        print(f"step cache {threshold}: {json.dumps(res[f'step_cache_{threshold}'])}", flush=True)
    pipe.step_cache = 0.0

    # diffusers Lumina2 at the same size and inputs
    res["diffusers_eager_s_per_step"] = res["diffusers_compiled_s_per_step"] = None
    if not args.no_diffusers:
        res.update(_diffusers(dit, x, cond, unc))
    # fp8 compute last: it changes the weights in place
    res["newbie_fp8_s_per_step"] = None
    if not args.no_fp8:
        try:
            from newbie.memory.quant import quantize_dit

            torch._dynamo.reset()
            for block in dit.blocks():
                block._compiled_call_impl = None
            quantize_dit(dit, "fp8-dynamic")
            for block in dit.blocks():
                block.compile(dynamic=None)
            with torch.no_grad():
                step = our_step()
                step(x, 0.5)
                res["newbie_fp8_s_per_step"] = _time(lambda: step(x, 0.5))
                res["newbie_fp8_rel_err_vs_bf16"] = float((step(x, 0.5) - ref_out).norm() / ref_out.norm())
            print(f"fp8 {res['newbie_fp8_s_per_step']:.4f} s/step, rel err {res['newbie_fp8_rel_err_vs_bf16']:.4f}")
        except Exception as e:  # report, do not hide, why fp8 did not run
            res["newbie_fp8_error"] = f"{type(e).__name__}: {e}"[:300]
            print("fp8 failed:", res["newbie_fp8_error"])

    if res.get("diffusers_eager_s_per_step"):
        res["speedup_vs_diffusers_eager"] = res["diffusers_eager_s_per_step"] / res["newbie_s_per_step"]
    if res.get("diffusers_compiled_s_per_step"):
        res["speedup_vs_diffusers_compiled"] = res["diffusers_compiled_s_per_step"] / res["newbie_s_per_step"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = res["device"].replace("NVIDIA ", "").replace(" ", "-").lower()
    path = out / f"speed-{name}-{res['date']}.json"
    path.write_text(json.dumps(res, indent=1))
    _print_table(res)
    print(path)
    return 0


def _diffusers(dit, x, cond, unc) -> dict:
    from diffusers import Lumina2Transformer2DModel

    cfg = dit.cfg
    with torch.device("cuda"):
        model = Lumina2Transformer2DModel(
            sample_size=128, patch_size=2, in_channels=16, hidden_size=cfg.dim, num_layers=cfg.n_layers,
            num_refiner_layers=cfg.n_refiner_layers, num_attention_heads=cfg.n_heads, num_kv_heads=cfg.n_kv_heads,
            multiple_of=cfg.multiple_of, ffn_dim_multiplier=None, norm_eps=cfg.norm_eps, axes_dim_rope=cfg.axes_dims,
            axes_lens=cfg.axes_lens, cap_feat_dim=cfg.cap_feat_dim).to(torch.bfloat16).eval()
    L = cond.cap_feats.shape[1]
    caps = torch.zeros(2, L, cfg.cap_feat_dim, device="cuda", dtype=torch.bfloat16)
    caps[0] = cond.cap_feats[0]
    caps[1, : unc.cap_feats.shape[1]] = unc.cap_feats[0]
    mask = torch.zeros(2, L, dtype=torch.bool, device="cuda")
    mask[0] = True
    mask[1, : unc.cap_feats.shape[1]] = True
    xx = x.repeat(2, 1, 1, 1).bfloat16()
    t = torch.full((2,), 0.5, device="cuda", dtype=torch.bfloat16)
    out = {}
    with torch.no_grad():
        fwd = lambda: model(xx, t, caps, mask, return_dict=False)[0]  # noqa: E731
        out["diffusers_eager_s_per_step"] = _time(fwd)
        print(f"diffusers eager {out['diffusers_eager_s_per_step']:.4f} s/step", flush=True)
        compiled = torch.compile(model)
        t0 = time.perf_counter()
        compiled(xx, t, caps, mask, return_dict=False)
        torch.cuda.synchronize()
        out["diffusers_compile_s"] = time.perf_counter() - t0
        out["diffusers_compiled_s_per_step"] = _time(lambda: compiled(xx, t, caps, mask, return_dict=False)[0])
        print(f"diffusers compiled {out['diffusers_compiled_s_per_step']:.4f} s/step "
              f"(compile {out['diffusers_compile_s']:.1f} s)", flush=True)
    del model, compiled
    torch.cuda.empty_cache()
    return out


def _print_table(res: dict) -> None:
    rows = [("bf16 matmul ceiling (TFLOP/s)", res.get("matmul_tflops")),
            ("newbie eager s/step", res.get("newbie_eager_s_per_step")),
            ("newbie compiled s/step", res.get("newbie_s_per_step")),
            ("newbie compile s", res.get("newbie_compile_s")),
            ("newbie % of ceiling", res.get("newbie_pct_of_ceiling")),
            ("newbie fp8 s/step", res.get("newbie_fp8_s_per_step")),
            ("diffusers eager s/step", res.get("diffusers_eager_s_per_step")),
            ("diffusers compiled s/step", res.get("diffusers_compiled_s_per_step")),
            ("newbie s/image", res.get("newbie_s_per_image")),
            ("newbie s/image official recipe", res.get("newbie_s_per_image_official_recipe")),
            ("peak GiB", res.get("peak_gib"))]
    for name, value in rows:
        print(f"{name:<34} {'-' if value is None else f'{value:.4f}'}")

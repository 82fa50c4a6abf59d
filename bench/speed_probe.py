"""Probe for issue 15 (one short GPU call): which fast paths pay on this GPU, before the full `newbie bench speed`.

Random weights at the real shapes, no checkpoint on disk. Measures: matmul ceiling; SDPA backends at head size 96
and the two CFG branch lengths; the block's GEMMs at one branch's rows vs both branches packed; the compiled
CFG step (reference block vs fast block: chosen attention + one w1|w3 GEMM) with and without CUDA graphs, and
a kernel-time breakdown; cold vs warm compile (second process, same on-disk cache); fp8 (torchao); the VAE
decode (fp32/bf16, channels-last, compiled); cache-dit's quantize + compile on diffusers' Lumina2.
Writes probe.json to $OUT after every section.

    python bench/speed_probe.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
CACHE = "/tmp/newbie-inductor-probe"
os.environ["TORCHINDUCTOR_CACHE_DIR"] = CACHE
OUT = Path(os.environ.get("OUT", "."))
RES: dict = {
    "device": torch.cuda.get_device_name(0),
    "torch": torch.__version__,
    "date": time.strftime("%Y-%m-%d", time.gmtime()),
}
T0 = time.perf_counter()


def save():
    RES["elapsed_s"] = time.perf_counter() - T0
    (OUT / "probe.json").write_text(json.dumps(RES, indent=1, default=str))


def section(name):
    def deco(fn):
        try:
            t = time.perf_counter()
            fn()
            RES.setdefault("section_s", {})[name] = time.perf_counter() - t
        except Exception as e:  # report and go on: every section is independent
            import traceback

            RES.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"[:400]
            traceback.print_exc()
        save()
        print(f"[{time.perf_counter() - T0:6.1f}s] {name}: done", flush=True)

    return deco


def bench(fn, warm=2, rep=7):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(rep):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) / 1e3)
    return sorted(ts)[len(ts) // 2]


@section("matmul")
def _():
    n = 8192
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    RES["matmul_tflops"] = 2 * n**3 / bench(lambda: a @ b, 3, 10) / 1e12


@section("attention")
def _():
    from newbie.model.fused import time_backends

    RES["attn_ms"] = {
        n: time_backends(24, 8, 96, n, names=("cudnn", "flash", "efficient")) for n in (4352, 4136, 16640)
    }
    import torch.nn.functional as F

    q = torch.randn(1, 24, 4352, 96, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(1, 8, 4352, 96, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    RES["attn_ms"]["default_4352"] = (
        bench(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)) * 1e3
    )
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        torch.cuda.synchronize()
    RES["attn_default_kernel"] = [e.key for e in prof.key_averages()][:4]


@section("gemm_packing")
def _():
    d, hid = 2304, 9216
    shapes = {"qkv": (d, 3840), "out": (d, d), "w13": (d, 2 * hid), "w1": (d, hid), "w2": (hid, d)}
    out = {}
    for name, (k, n) in shapes.items():
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
        row = {}
        for m in (4352, 4136, 8488):
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            s = bench(lambda x=x, w=w: torch.nn.functional.linear(x, w), 3, 10)
            row[m] = {"ms": s * 1e3, "tflops": 2 * m * n * k / s / 1e12}
        out[name] = row
    RES["gemm"] = out


from speed_probe_child import make_dit, make_inputs, make_step  # noqa: E402 - after the env set-up above

STATE: dict = {}


@section("step")
def _():
    from newbie.bench.speed import step_flops
    from newbie.model import fused

    dit = make_dit()
    x, cond, unc, grid = make_inputs(dit)
    step = make_step(dit, x, cond, unc, grid)
    STATE.update(dit=dit, step=step, x=x, cond=cond, unc=unc, grid=grid)
    RES["flops_per_step"] = step_flops(dit, [256, 40], grid * grid)
    with torch.no_grad():
        ref = step()
        RES["eager_s"] = bench(step, 1, 3)
        RES["picked_backend"] = fused.pick_backend(dit)
        fused.enable(dit, RES["picked_backend"])
        RES["eager_fast_s"] = bench(step, 1, 3)
        t = time.perf_counter()
        for b in dit.blocks():
            b.compile(fullgraph=True)
        step()
        torch.cuda.synchronize()
        RES["compile_cold_s"] = time.perf_counter() - t
        RES["fast_compiled_s"] = bench(step)
        out = step()
        RES["fast_rel_err"] = float((out - ref).norm() / ref.norm())
        STATE["ref"] = ref
        save()
        # kernel breakdown of the compiled fast step
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize()
        cats: dict = {}
        top = []
        for e in prof.key_averages():
            us = e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
            k = e.key.lower()
            cat = (
                "attention"
                if any(s in k for s in ("flash", "cudnn", "fmha", "attn", "sdpa"))
                else "gemm"
                if any(s in k for s in ("gemm", "nvjet", "cutlass", "xmma", "cublas", "sm90"))
                else "triton"
                if "triton" in k
                else "other"
            )
            cats[cat] = cats.get(cat, 0) + us / 1e3
            top.append((us / 1e3, e.key[:90], e.count))
        RES["profile_ms_by_kind"] = cats
        RES["profile_top"] = sorted(top, reverse=True)[:25]
        save()
        graphed = fused.use_cuda_graphs(dit)
        t = time.perf_counter()
        step()
        torch.cuda.synchronize()
        RES["graph_capture_s"] = time.perf_counter() - t
        RES["fast_graphed_s"] = bench(step)
        out = step()
        RES["graphed_rel_err_vs_compiled"] = float((out - step()).norm() / out.norm())
        RES["graphed_rel_err_vs_eager"] = float((out - ref).norm() / ref.norm())
        RES["graph_captures"] = graphed.captures
        RES["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    RES["pct_of_ceiling"] = RES["flops_per_step"] / RES["fast_graphed_s"] / 1e12 / RES["matmul_tflops"]


@section("compile_warm")
def _():
    code = f"""
import sys, time, torch
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); sys.path.insert(0, {str(Path(__file__).resolve().parents[1] / "src")!r})
from speed_probe_child import main
main({RES.get("picked_backend", "cudnn")!r})
"""
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=CACHE)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=150)
    RES["compile_warm_child"] = r.stdout.strip().splitlines()[-3:] + r.stderr.strip().splitlines()[-3:]


@section("compile_dynamic_true_cold")
def _():
    code = f"""
import sys, time, torch
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); sys.path.insert(0, {str(Path(__file__).resolve().parents[1] / "src")!r})
from speed_probe_child import main
main({RES.get("picked_backend", "cudnn")!r}, dynamic=True, time_step=True)
"""
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=CACHE + "-dyn")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=150)
    RES["compile_dynamic_child"] = r.stdout.strip().splitlines()[-3:] + r.stderr.strip().splitlines()[-3:]


@section("sizes_2048")
def _():
    dit = STATE["dit"]
    x, cond, unc, grid = make_inputs(dit, 2048)
    step = make_step(dit, x, cond, unc, grid)
    from newbie.bench.speed import step_flops

    with torch.no_grad():
        s = bench(step, 2, 3)
    f = step_flops(dit, [256, 40], grid * grid)
    RES["s2048"] = {"s": s, "tflops": f / s / 1e12, "pct": f / s / 1e12 / RES["matmul_tflops"]}


@section("fp8")
def _():
    from newbie.memory.quant import quantize_dit
    from newbie.model import fused

    dit, step = STATE["dit"], STATE["step"]
    fused.use_cuda_graphs(dit, False)
    torch._dynamo.reset()
    fused.disable(dit)
    quantize_dit(dit, "fp8-dynamic")
    fused.enable(dit, RES.get("picked_backend", "cudnn"))
    t = time.perf_counter()
    for b in dit.blocks():
        b._compiled_call_impl = None
        b.compile(fullgraph=True)
    with torch.no_grad():
        step()
        torch.cuda.synchronize()
        RES["fp8_compile_s"] = time.perf_counter() - t
        RES["fp8_compiled_s"] = bench(step)
        fused.use_cuda_graphs(dit)
        RES["fp8_graphed_s"] = bench(step)
        out = step()
        RES["fp8_rel_err"] = float((out - STATE["ref"]).norm() / STATE["ref"].norm())
    del STATE["dit"], STATE["step"]
    torch.cuda.empty_cache()


@section("vae")
def _():
    from gpu_check import flux_vae

    vae = flux_vae().cuda().eval()
    z = torch.randn(1, 16, 128, 128, device="cuda")
    out = {}
    with torch.no_grad():
        out["fp32"] = bench(lambda: vae.decode(z).sample, 1, 3)
        vae.to(memory_format=torch.channels_last)
        out["fp32_cl"] = bench(lambda: vae.decode(z).sample, 1, 3)
        vae.to(torch.bfloat16)
        zb = z.bfloat16()
        out["bf16_cl"] = bench(lambda: vae.decode(zb).sample, 1, 3)
        vae.decoder.compile()
        t = time.perf_counter()
        vae.decode(zb)
        torch.cuda.synchronize()
        out["bf16_cl_compile_s"] = time.perf_counter() - t
        out["bf16_cl_compiled"] = bench(lambda: vae.decode(zb).sample, 1, 3)
        vae.to(torch.float32)
        t = time.perf_counter()
        vae.decode(z)
        torch.cuda.synchronize()
        out["fp32_cl_compile_s"] = time.perf_counter() - t
        out["fp32_cl_compiled"] = bench(lambda: vae.decode(z).sample, 1, 3)
    RES["vae_decode_s"] = out


@section("cache_dit")
def _():
    import cache_dit
    from diffusers import Lumina2Transformer2DModel

    from newbie.config import DiTConfig

    cfg = DiTConfig()
    with torch.device("cuda"):
        m = (
            Lumina2Transformer2DModel(
                sample_size=128,
                patch_size=2,
                in_channels=16,
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
            .to(torch.bfloat16)
            .eval()
        )
    L = 256
    caps = torch.randn(2, L, cfg.cap_feat_dim, device="cuda", dtype=torch.bfloat16)
    mask = torch.ones(2, L, dtype=torch.bool, device="cuda")
    mask[1, 40:] = False
    xx = torch.randn(2, 16, 128, 128, device="cuda", dtype=torch.bfloat16)
    t = torch.full((2,), 0.5, device="cuda", dtype=torch.bfloat16)

    def fwd():
        return m(xx, t, caps, mask, return_dict=False)[0]

    out = {}
    with torch.no_grad():
        out["eager_s"] = bench(fwd, 1, 3)
        m = cache_dit.quantize(m, cache_dit.QuantizeConfig(quant_type="float8_per_row"))
        out["fp8_eager_s"] = bench(fwd, 1, 3)
        out["repeated_blocks"] = getattr(m, "_repeated_blocks", None)
    RES["cache_dit"] = out


print(json.dumps({k: v for k, v in RES.items() if k not in ("profile_top",)}, indent=1, default=str))

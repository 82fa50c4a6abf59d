"""`newbie bench speed`: our DiT step and whole generate() against diffusers' Lumina2 (and cache-dit), in
one run on one GPU.

Times, at the same size and inputs: a bf16 matmul ceiling; our CFG step (cond + uncond, the uncond
caption shorter, as with an empty negative) eager, compiled (fast block: measured attention backend, one
w1|w3 GEMM), with CUDA graphs, and with fp8 compute; the compile cold and warm (a second process on the
same on-disk cache); whole images with the official recipe (18 midpoint steps, CFG until t = 0.25, encode
+ decode included) in bf16 and fp8, and 28 Euler steps with CFG on every step; the VAE decode variants; a
scaling table over image sizes; Gemma's decode speed for prompt expansion (`llm_tokens_per_s`: the best of
the plain and compiled decoders, against its bandwidth bound, with one eager step's kernel profile); peers
(diffusers eager and compiled, cache-dit fp8 + compile with its compile timed apart); every step cache policy
and cache-dit's DBCache on one trajectory with the demo model's binding for each (`step_cache_policies`,
newbie.bench.speed_cache). Every section is timed against `--budget-s` and stopped at its limit; one that no
longer fits is recorded with the reason. The JSON (bench/results/speed-<device>-<date>.json, and $OUT when
set) is rewritten after every section, so a run cut short still leaves its numbers.
"""

import importlib.util
import os
from pathlib import Path

import torch

from newbie.bench.llm_tokens import llm_section
from newbie.bench.speed_cache import cache_comparison as _cache_comparison

# Scripts (bench/speed_diag.py, bench/compile_smoke.py), the startup bench and tests reach these through this
# module: `x as x` keeps them here.
from newbie.bench.speed_measure import TARGETS as TARGETS
from newbie.bench.speed_measure import _image_tensor as _image_tensor
from newbie.bench.speed_measure import _print_table, _Run, _targets, run_header
from newbie.bench.speed_measure import _time as _time
from newbie.bench.speed_measure import attention_ms_per_step as attention_ms_per_step
from newbie.bench.speed_measure import matmul_tflops as matmul_tflops
from newbie.bench.speed_measure import psnr as psnr
from newbie.bench.speed_measure import step_flops as step_flops
from newbie.bench.speed_measure import step_flops_exact as step_flops_exact
from newbie.bench.speed_peers import _cache_dit_fp8, _diffusers_compiled
from newbie.bench.speed_peers import _diffusers_peers as _diffusers_peers
from newbie.bench.speed_peers import _trajectory as _trajectory
from newbie.bench.speed_peers import lumina2_like as lumina2_like
from newbie.errors import NewbieError

# the images' prompt: a character and 200 general tags (about the 256 caption tokens the step timings use), valid
# XML as every door requires
BENCH_PROMPT = (
    "<character_1> <n>$character_1$</n> <gender>1girl</gender> <appearance>red_hair</appearance> </character_1> "
    "<general_tags> <other>" + ", ".join(f"tag{i}" for i in range(200)) + "</other> </general_tags>"
)


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
    p.add_argument("--skip", default="", help="comma list of sections not to run (e.g. compile_warm,sizes)")
    p.add_argument("--out", default="bench/results")
    p.set_defaults(func=run)


def run(args) -> int:
    if not torch.cuda.is_available():
        raise NewbieError("newbie bench speed needs a CUDA GPU")
    from newbie.bench import speed_cache
    from newbie.bench import speed_sections as sec
    from newbie.model import fused

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
    R = _Run(res, paths, args.budget_s, tuple(s.strip() for s in args.skip.split(",") if s.strip()))
    cache_dir = fused.compile_cache(
        os.environ.get("NEWBIE_BENCH_CACHE", f"/tmp/newbie-inductor-{os.getpid()}")
    )
    res["compile_cache_dir"] = cache_dir
    prompt = BENCH_PROMPT
    kw = {"seed": 1, "width": args.size, "height": args.size}
    b = sec.SpeedRun(args, res, R, cache_dir, L=args.caption_tokens, prompt=prompt, kw=kw)
    S = b.S

    R.section("ceiling", 5, lambda: sec.ceiling(b))
    R.section("attention", 10, lambda: sec.attention(b))
    if not R.section("load", 30, lambda: sec.load(b)):
        return 1
    R.section("eager", 10, lambda: sec.eager(b))
    if not R.section("compiled", 45, lambda: sec.compiled(b)):
        return 1
    R.section("compile_warm", 40, lambda: sec.warm(b))
    R.section("vae", 10, lambda: sec.vae(b))
    R.section("images", 20, lambda: sec.images(b))
    # fp8 right after the bf16 images (native Float8Linear compiles in a fraction of the limit), with its own
    # limit all the same
    if args.no_fp8:
        res["newbie_fp8_s_per_step"] = res["image_official_fp8_s"] = "not run: --no-fp8"
    elif not R.section("fp8", 45, lambda: sec.fp8(b), limit_s=150):
        why = res.get("skipped", {}).get("fp8") or res.get("errors", {}).get("fp8")
        res.setdefault("newbie_fp8_s_per_step", f"not run: {why}")
        res.setdefault("image_official_fp8_s", f"not run: {why}")
    R.section("sizes", 15, lambda: sec.sizes(b))
    R.section("peers", 8, lambda: sec.peers(b))
    # Gemma prompt expansion's decoders on the loaded (random, Gemma3-4B-shaped) text encoder: the plain graph,
    # a profile, then the compiled step (each kind capped inside: llm_tokens.CAPS_S)
    if not R.section("llm", 30, lambda: llm_section(res, S["pipe"].text.gemma, "cuda"), limit_s=300):
        why = res.get("skipped", {}).get("llm") or res.get("errors", {}).get("llm")
        res.setdefault("llm_tokens_per_s", f"not run: {why}")
    R.section("step_cache", 12, lambda: _cache_comparison(S, res, R, args.steps))
    R.section("step_cache_binding", 20, lambda: speed_cache.binding(res), limit_s=120)
    _late_peers(S, res, R)
    _finish(res, R)
    print(paths[0])
    return 0


def _late_peers(S: dict, res: dict, R: _Run) -> None:
    """diffusers compiled and cache-dit fp8 last (their compiles are the longest), and a reason for every peer
    that did not run."""
    res.setdefault("peers", {})
    if "lumina2" in S:
        R.section("diffusers_compiled", 30, lambda: _diffusers_compiled(S, res, R))
    if "cache_dit_fp8_compiled" not in res["peers"]:
        if importlib.util.find_spec("cache_dit") is None:
            res["peers"]["cache_dit_fp8_compiled"] = "not run: cache-dit is not installed"
        elif importlib.util.find_spec("torchao") is None:
            res["peers"]["cache_dit_fp8_compiled"] = (
                "not run: cache-dit's fp8 (float8_per_row) quantizes through torchao, which is not installed"
            )
        # inductor compiles cache-dit's fp8 graphs for minutes: a limit of its own, the compile timed apart
        # (cache_dit_fp8_compile_s; 2026-12-07 stopped at 90 s inside inductor)
        elif not R.section("cache_dit_fp8", 60, lambda: _cache_dit_fp8(S, res, R), limit_s=240):
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


def _finish(res: dict, R: _Run) -> None:
    if "diffusers_eager_s_per_step" in res:
        res["speedup_vs_diffusers_eager"] = res["diffusers_eager_s_per_step"] / res["newbie_s_per_step"]
    if "diffusers_compiled_s_per_step" in res:
        res["speedup_vs_diffusers_compiled"] = res["diffusers_compiled_s_per_step"] / res["newbie_s_per_step"]
    res["targets"] = _targets(res)
    R.save()
    _print_table(res)

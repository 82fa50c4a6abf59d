"""Full-size GPU check of the compiled user path (issue 15's seams): `newbie.load` -> `Pipeline.compile()` ->
generate with the official recipe, an unfused LoRA on the compiled pipeline (its blocks must run the hooks), the
base model again (compiled blocks back, the first image bit for bit), and `load(quantize="fp8-dynamic")` compiled.
Random weights at the real shapes (bench/gpu_check.py's checkpoint): speed and seams, not picture quality.

    python bench/compile_smoke.py --out $OUT      # H200: ~2 minutes with the checkpoint write
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "bench"), str(ROOT)]

PROMPT = "<character_1> <n>$character_1$</n> <gender>1girl</gender> </character_1> " + ", ".join(
    f"tag{i}" for i in range(120)
)
OFFICIAL = dict(seed=7, width=1024, height=1024, steps=18, sampler="midpoint", cfg_trunc=0.25)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(pipe, **kw):
    pipe.embed_cache.memory.clear()
    sync()
    t = time.perf_counter()
    gen = pipe.generate(PROMPT, **{**OFFICIAL, **kw})
    sync()
    return gen, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--model", default="/tmp/newbie-full")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument(
        "--backend", default="inductor", help="torch.compile backend (eager: a CPU check of the script)"
    )
    args = ap.parse_args()
    OFFICIAL.update(width=args.size, height=args.size)
    import newbie
    from newbie.adapters import linear_shapes
    from newbie.bench.speed import _image_tensor, psnr
    from tests.adapters.makers import write_peft

    model = Path(args.model)
    if not (model / "model_index.json").exists():
        from gpu_check import write_full_size

        write_full_size(model)
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    res: dict = {"device": name, "torch": torch.__version__, "date": str(date.today()), "size": args.size}
    out = Path(args.out) / f"compile-smoke-{res['device'].replace('NVIDIA ', '').lower()}-{res['date']}.json"

    def save():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1, default=str))

    pipe = newbie.load(model, device=args.device)
    res["compile_s"] = pipe.compile(backend=args.backend)
    base, res["bf16_official_s"] = timed(pipe)
    res["bf16_timings"] = base.timings
    res["fast_paths"] = pipe.fast_paths
    lora = write_peft(Path("/tmp/newbie-smoke-lora"), linear_shapes(pipe.dit), alpha=8.0)
    with_lora, res["lora_unfused_s"] = timed(pipe, loras=[f"{lora}:0.8"])
    res["lora_events"] = with_lora.guard_events
    res["lora_changes_image"] = not torch.equal(with_lora.latents, base.latents)
    again, _ = timed(pipe)
    res["base_again_bit_identical"] = torch.equal(again.latents, base.latents)
    res["blocks_compiled_after"] = all(b._compiled_call_impl is not None for b in pipe.dit.blocks())
    save()
    print(json.dumps(res, default=str)[:1500], flush=True)
    del pipe
    torch.cuda.empty_cache()

    pipe8 = newbie.load(model, device=args.device, quantize="fp8-dynamic")
    res["fp8_compile_s"] = pipe8.compile(backend=args.backend)
    img8, res["fp8_official_s"] = timed(pipe8)
    res["fp8_timings"] = img8.timings
    res["fp8_recipe_dtype"] = img8.recipes[0].dtype
    res["fp8_psnr_vs_bf16"] = psnr(_image_tensor(img8.images[0]), _image_tensor(base.images[0]))
    res["fp8_finite"] = bool(torch.isfinite(img8.latents).all())
    save()
    print(json.dumps({k: v for k, v in res.items() if k.startswith("fp8")}, default=str), flush=True)


if __name__ == "__main__":
    main()

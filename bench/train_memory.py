"""LoRA training memory and speed at full size on a GPU (issue 25): the 3.49B NextDiT with RANDOM weights in
bf16, trained by newbie.train's own pieces (hook LoRA layers, gradient checkpointing on every block, the
flow-matching objective with caption dropout, AdamW in fp32) on cached random caption features and latents
(the real trainer encodes them once and moves the encoders off the GPU, so the step loop sees exactly this).

Two cases, each a few steps after a warm-up:
  1024x1024, rank 32, batch 1                     -> peak_gib_1024_r32, s_per_step_1024_r32 (target <= 16 GiB)
  768x768, rank 16, under the --vram 12GB cap     -> peak_gib_768_r16_12gb, s_per_step_768_r16_12gb
Writes bench/results/train-<device>-<date>.json (or --out-dir). `--tiny` runs a tiny model on the CPU in
seconds (tests/bench/test_train_memory.py keeps the script from rotting).

    python bench/train_memory.py [--steps 5] [--caption-tokens 320] [--out-dir bench/results]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from newbie.config import DiTConfig  # noqa: E402
from newbie.model.dit import NextDiT  # noqa: E402
from newbie.train import recompute  # noqa: E402
from newbie.train.lora import DEFAULT_TARGETS, LoraSet, target_layers  # noqa: E402
from newbie.train.objective import Batch, Blank, flow_loss  # noqa: E402

GIB = 2**30


def build_dit(cfg: DiTConfig, device: torch.device, dtype: torch.dtype) -> NextDiT:
    """Random weights made directly on the device in the training dtype (no fp32 copy on the way)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            dit = NextDiT(cfg)
    finally:
        torch.set_default_dtype(old)
    return dit.requires_grad_(False).eval()


def run_case(dit, side: int, rank: int, steps: int, cap_tokens: int, vram_gib: float | None, device) -> dict:
    cuda = device.type == "cuda"
    dtype = next(dit.parameters()).dtype
    if cuda:
        total = torch.cuda.get_device_properties(device).total_memory / GIB
        torch.cuda.set_per_process_memory_fraction(
            min(1.0, (vram_gib or total) / total), torch.cuda.current_device()
        )
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    lora = LoraSet(target_layers(dit, DEFAULT_TARGETS), rank, float(rank), seed=0).to(device)
    opt = torch.optim.AdamW(lora.parameters(), lr=1e-4, weight_decay=0.01)
    lora.attach(dit)
    wrapped = recompute.enable(dit.blocks())
    gen = torch.Generator().manual_seed(0)
    lat = side // 8
    batch = Batch(
        torch.randn(1, dit.cfg.in_channels, lat, lat, generator=gen),
        torch.randn(1, cap_tokens, dit.cfg.cap_feat_dim, generator=gen).to(dtype),
        torch.ones(1, cap_tokens, dtype=torch.bool),
        torch.randn(1, dit.cfg.clip_text_dim, generator=gen),
    )
    blank = Blank(torch.randn(8, dit.cfg.cap_feat_dim, generator=gen), torch.randn(dit.cfg.clip_text_dim))
    times = []
    try:
        for i in range(steps + 1):  # the first step warms up (allocator, kernels) and is not timed
            if cuda:
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            loss = flow_loss(dit, batch, blank, gen, device, dtype)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lora.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.synchronize(device)
            if i:
                times.append(time.perf_counter() - t0)
        ok = bool(torch.isfinite(loss))
    finally:
        recompute.disable(wrapped)
        lora.detach()
    # no CUDA, no peak: None rather than a made-up number
    peak = round(torch.cuda.max_memory_allocated(device) / GIB, 3) if cuda else None
    reserved = round(torch.cuda.max_memory_reserved(device) / GIB, 3) if cuda else None
    del lora, opt
    return {
        "peak_gib": peak,
        "peak_reserved_gib": reserved,
        "s_per_step": round(sum(times) / len(times), 4),
        "loss_finite": ok,
        "lora_params": sum(
            p.numel() for p in LoraSet(target_layers(dit, DEFAULT_TARGETS), rank, 1.0, 0).parameters()
        ),
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--caption-tokens", type=int, default=320, help="Gemma tokens (system prompt + caption)")
    ap.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--tiny", action="store_true", help="a tiny model on the CPU (the script's own test)")
    args = ap.parse_args(argv)

    if args.tiny:
        from newbie.demo.tiny import tiny_dit_config

        device, dtype, cfg = torch.device("cpu"), torch.float32, tiny_dit_config()
        sides, cap = (64, 32), 16
    else:
        if not torch.cuda.is_available():
            raise SystemExit("needs a CUDA GPU (or --tiny)")
        device, dtype, cfg = torch.device("cuda"), torch.bfloat16, DiTConfig()
        sides, cap = (1024, 768), args.caption_tokens
    dit = build_dit(cfg, device, dtype)
    weights = sum(p.numel() * p.element_size() for p in dit.parameters()) / GIB
    big = run_case(dit, sides[0], 32, args.steps, cap, None, device)
    small = run_case(dit, sides[1], 16, args.steps, cap, 12.0, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    slug = name.replace("NVIDIA ", "").split()[0].lower() if device.type == "cuda" else "cpu-tiny"
    result = {
        "device": name,
        "torch": torch.__version__,
        "date": date.today().isoformat(),
        "dit_weights_gib": round(weights, 3),
        "caption_tokens": cap,
        "steps_timed": args.steps,
        "peak_gib_1024_r32": big["peak_gib"],
        "s_per_step_1024_r32": big["s_per_step"],
        "peak_gib_768_r16_12gb": small["peak_gib"],
        "s_per_step_768_r16_12gb": small["s_per_step"],
        "cases": {f"{sides[0]}_r32": big, f"{sides[1]}_r16_12gb": small},
        "targets": {"peak_gib_1024_r32": "<= 16", "peak_gib_768_r16_12gb": "<= 12"},
    }
    out = Path(args.out_dir) / f"train-{slug}-{result['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()

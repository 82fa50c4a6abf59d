"""`newbie bench precision`: fp32 (the reference) vs bf16, fp16 and int8/fp8 weights on this machine.

Writes report.md, report.json, contact-sheet.png and time-memory.png into --out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from newbie.errors import NewbieError


def add_parser(bench_subparsers) -> argparse.ArgumentParser:
    from newbie.cli.model_args import parse_size

    p = bench_subparsers.add_parser(
        "precision",
        help="generate in fp32/bf16/fp16/int8/fp8; time, memory, PSNR/SSIM vs fp32, NaN, black images",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--out", default="outputs/precision", help="folder for report.md, report.json and the PNGs"
    )
    p.add_argument(
        "--dtypes",
        default="fp32,bf16,fp16,int8,fp8",
        help="from fp32, bf16, fp16, int8, fp8, fp8-dynamic; fp32 (the reference) always runs first",
    )
    p.add_argument(
        "--prompt",
        action="append",
        metavar="TEXT",
        help="a prompt or @file; repeat for more "
        "(default: 2 XML multi-character prompts and 1 tag prompt for the model)",
    )
    p.add_argument("--seeds", help="comma-separated seeds (default: 0 for the demo model, 0,1 otherwise)")
    p.add_argument("--steps", type=int, help="default: the model's")
    p.add_argument("--sampler", help="euler, midpoint, dpmpp_2m (default: the model's)")
    p.add_argument("--cfg", type=float, help="default: the model's")
    p.add_argument("--size", type=parse_size, help="WIDTHxHEIGHT (default: the model's)")
    p.add_argument("--warmup-steps", type=int, default=2, help="steps of the warm-up generation per dtype")
    p.add_argument("--text-dtype", help="fix the text encoders' dtype (default: follow each dtype)")
    p.add_argument("--cell", type=int, default=256, help="contact-sheet tile width in pixels")
    p.add_argument("--note", default="", help="a line printed in the report, e.g. about random weights")
    p.add_argument(
        "--model", help="model folder or transformer .safetensors (default: the embedded demo model)"
    )
    p.add_argument("--text-encoder", help="Gemma3 folder, when --model is a single file")
    p.add_argument("--clip-model", help="Jina CLIP v2 folder, when --model is a single file")
    p.add_argument("--vae", help="VAE folder, when --model is a single file")
    p.add_argument("--comfy-dir", help="a ComfyUI models/ folder supplying the components not given")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.set_defaults(func=run)
    return p


def parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise NewbieError(f"--seeds must be comma-separated integers, got '{text}'") from None
    if not seeds or any(s < 0 for s in seeds):
        raise NewbieError(f"--seeds needs at least one seed >= 0, got '{text}'")
    return seeds


def run(args: argparse.Namespace) -> int:
    from newbie.bench.report import table_lines, write_report
    from newbie.bench.study import StudyConfig, check_dtypes, run_study
    from newbie.cli.model_args import read_prompt

    if args.cell < 16:
        raise NewbieError(f"--cell must be at least 16 pixels, got {args.cell}")
    if args.warmup_steps < 1:
        raise NewbieError(f"--warmup-steps must be >= 1, got {args.warmup_steps}")
    w, h = args.size if args.size else (None, None)
    cfg = StudyConfig(
        dtypes=check_dtypes([d.strip() for d in args.dtypes.split(",") if d.strip()]),
        prompts=[read_prompt(p) for p in args.prompt] if args.prompt else None,
        seeds=parse_seeds(args.seeds),
        model=args.model,
        device=args.device,
        text_dtype=args.text_dtype,
        steps=args.steps,
        sampler=args.sampler,
        cfg=args.cfg,
        width=w,
        height=h,
        warmup_steps=args.warmup_steps,
        note=args.note,
        load_kwargs=dict(
            text_encoder=args.text_encoder,
            clip_model=args.clip_model,
            vae=args.vae,
            comfy_dir=getattr(args, "comfy_dir", None),
        ),
    )
    result = run_study(cfg)
    paths = write_report(result, Path(args.out), cell=args.cell)
    print("\n".join(table_lines(result)), file=sys.stderr)
    for path in paths:
        print(path)
    return 0

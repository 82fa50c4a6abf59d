"""`newbie plan --vram N --size WxH`: print the memory plan without running anything."""

from __future__ import annotations

from newbie.errors import NewbieError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("plan", help="print the memory plan for a VRAM budget (runs nothing)")
    p.add_argument("--vram", required=True, help="budget, e.g. 8GB")
    p.add_argument("--size", default="1024x1024", help="WIDTHxHEIGHT")
    p.add_argument("--caption-tokens", type=int, default=256)
    p.set_defaults(func=run)


def run(args) -> int:
    from newbie.memory.planner import parse_vram, plan_for
    from newbie.pipeline.request import parse_size

    w, h = parse_size(args.size)
    if w is None:
        raise NewbieError("--size must be WIDTHxHEIGHT here (the plan needs a size), got 'auto'")
    plan = plan_for(parse_vram(args.vram), w, h, caption_tokens=args.caption_tokens)
    print(plan.describe())
    print(
        "bit-identical to all-resident bf16"
        if plan.bit_identical
        else "not bit-identical to all-resident bf16 (quantization or VAE tiling); see docs/benchmarks.md for PSNR"
    )
    return 0

"""`newbie trace`: one generation with hooks on every DiT module; per layer and chosen step, the output's
shape and value statistics, the attention logits' included. Shows where fp16 overflows and whether bf16
is safe."""

from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path

from newbie.errors import NewbieError

COLUMNS = (
    "pass",
    "step",
    "module",
    "kind",
    "shape",
    "dtype",
    "calls",
    "min",
    "max",
    "absmax",
    "rms",
    "frac_over_fp16",
    "nan_count",
    "inf_count",
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    from newbie.cli.model_args import add_model_args, parse_size

    p = subparsers.add_parser(
        "trace",
        help="run one generation with hooks; print per-layer value statistics at chosen steps",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "prompt", nargs="?", help="the prompt or @file (default: the first prompt of the precision study)"
    )
    p.add_argument("--negative")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int)
    p.add_argument("--cfg", type=float)
    p.add_argument("--sampler", help="euler, midpoint, dpmpp_2m")
    p.add_argument("--shift", type=float)
    p.add_argument("--size", type=parse_size, help="WIDTHxHEIGHT, multiples of 16")
    p.add_argument(
        "--steps-to-trace", metavar="LIST", help="e.g. 1,10,20 (default: first, middle and last step)"
    )
    p.add_argument(
        "--match", metavar="REGEX", help="trace only modules whose name matches, e.g. 'logits|feed_forward$'"
    )
    p.add_argument("--no-logits", action="store_true", help="skip recomputing the attention logits (faster)")
    p.add_argument(
        "--text-encoders", action="store_true", help="trace Gemma and Jina too (reported as step 0)"
    )
    p.add_argument("--csv", metavar="FILE", help="write every row to this CSV file")
    p.add_argument("--plot", metavar="FILE.png", help="per-layer absmax chart with the fp16 limit drawn")
    p.add_argument("--image", metavar="FILE.png", help="also save the generated image (with its recipe)")
    p.add_argument("--quiet", action="store_true", help="print only the summary, not every row")
    add_model_args(p)
    p.set_defaults(func=run)
    return p


def parse_steps(text: str | None, steps: int) -> set[int]:
    if not text:
        return {1, (steps + 1) // 2, steps}
    try:
        chosen = {int(s) for s in text.split(",") if s.strip()}
    except ValueError:
        raise NewbieError(f"--steps-to-trace must be comma-separated step numbers, got '{text}'") from None
    if not chosen:
        raise NewbieError("--steps-to-trace is empty")
    return chosen


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def step_label(row: dict) -> str:
    if row["step"] == 0:
        return "text encoders"
    return f"step {row['step']}" + (f" (pass {row['pass']})" if row["pass"] > 1 else "")


def print_table(rows: list[dict], out=None) -> None:
    out = out or sys.stdout
    rows = [{**r, "step": r["step"] if r["pass"] == 1 else f"{r['step']}/p{r['pass']}"} for r in rows]
    shown = ("step", "module", "shape", "dtype", "min", "max", "absmax", "rms", "frac_over_fp16", "nan_count")
    heads = ("step", "module", "shape", "dtype", "min", "max", "absmax", "rms", ">fp16", "nan")
    cells = [[_fmt(r[c]) for c in shown] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(heads)]
    print("  ".join(h.ljust(w) for h, w in zip(heads, widths)), file=out)
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)), file=out)


def print_summary(rows: list[dict], dtype: str, out=None) -> None:
    out = out or sys.stdout
    for key in sorted({(r["pass"], r["step"]) for r in rows}):
        step_rows = [r for r in rows if (r["pass"], r["step"]) == key]
        top = max(step_rows, key=lambda r: r["absmax"] or 0.0)
        over = [r["module"] for r in step_rows if r["frac_over_fp16"] > 0]
        nan = [r["module"] for r in step_rows if r["nan_count"] > 0]
        line = f"{step_label(step_rows[0])}: largest finite |x| {_fmt(top['absmax'])} at {top['module']}"
        listed = ", ".join(over[:5]) + (" ..." if len(over) > 5 else "")
        line += f"; beyond fp16 range (Inf included): {listed or 'none'}"
        if nan:
            line += f"; NaN in {len(nan)} modules, first {nan[0]}"
        print(line, file=out)
    print(f"(DiT dtype {dtype}; fp16 max is 65504)", file=out)


def write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r[k] is None else r[k]) for k in COLUMNS})


def run(args: argparse.Namespace) -> int:
    from newbie.bench.prompts import default_prompts
    from newbie.cli.model_args import load_from_args, read_prompt
    from newbie.precision.trace import trace_generation

    if args.match:
        try:
            re.compile(args.match)
        except re.error as e:
            raise NewbieError(f"--match is not a valid regular expression ({e})") from None
    if args.plot and Path(args.plot).suffix.lower() != ".png":
        raise NewbieError(f"--plot must be a .png path, got '{args.plot}'")
    if args.plot:
        from newbie.bench.charts import have_matplotlib

        if not have_matplotlib():
            raise NewbieError("--plot needs matplotlib (pip install -r requirements-extras.txt)")
    if getattr(args, "compile", False):
        raise NewbieError("newbie trace runs the model eager, with hooks in every module; drop --compile")
    pipe = load_from_args(args, plan_size=args.size if getattr(args, "vram", None) else None)
    if pipe.notice and not args.quiet:
        print(pipe.notice, file=sys.stderr)
    prompt = read_prompt(args.prompt) if args.prompt else default_prompts(pipe.spec.name)[0]
    w, h = args.size if args.size else (None, None)
    steps = args.steps if args.steps is not None else pipe.spec.sampling.steps
    gen, stats = trace_generation(
        pipe,
        prompt,
        parse_steps(args.steps_to_trace, steps),
        match=args.match,
        logits=not args.no_logits,
        text_encoders=args.text_encoders,
        negative=args.negative,
        seed=args.seed,
        steps=args.steps,
        cfg=args.cfg,
        sampler=args.sampler,
        shift=args.shift,
        width=w,
        height=h,
    )
    rows = [s.as_row() for s in stats]
    if not rows:
        raise NewbieError("nothing was traced (does --match select any module?)")
    if not args.quiet:
        print_table(rows)
    print_summary(rows, pipe.dtypes["dit"])
    for msg in gen.recipes[0].warnings:
        print(f"warning: {msg}", file=sys.stderr)
    if args.csv:
        write_csv(rows, Path(args.csv))
        print(args.csv)
    if args.plot:
        from newbie.bench.charts import absmax_chart

        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        absmax_chart(rows, Path(args.plot), f"{pipe.folder.name}, DiT {pipe.dtypes['dit']}")
        print(args.plot)
    if args.image:
        from newbie.pipeline.images import save_png

        save_png(gen.images[0], gen.recipes[0], Path(args.image))
        print(args.image)
    return 0

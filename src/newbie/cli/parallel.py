"""`newbie generate ... --parallel sp:2 | cfg:2 | cfg:2,sp:2`: one image on several processes it starts itself
(one per GPU with NCCL, or with --device cpu one per CPU process over gloo). Every combination the machine or
the model cannot run is refused in one line before any process starts."""

from __future__ import annotations

import sys

from newbie.errors import NewbieError
from newbie.parallel.mesh import Layout


def cmd_generate_parallel(args, out) -> int:
    """`newbie generate` with --parallel (called by newbie.cli.main before anything is loaded); out: where the
    images go (cli.output.OutputSpec, checked by main's preflight)."""
    from newbie.cli.model_args import load_kwargs, spec_from_args
    from newbie.cli.output import write_generation
    from newbie.cli.request_args import settings_from_args
    from newbie.parallel.preflight import preflight
    from newbie.parallel.runner import generate
    from newbie.pipeline.request import check

    if args.from_image:
        raise NewbieError("--from re-makes an image on one device; drop --parallel")
    if not args.prompt:
        raise NewbieError("give a prompt (or @file)")
    request = settings_from_args(args)
    check(request, spec_from_args(args))  # a bad setting fails before any process starts
    layout, placement = preflight(
        args.parallel,
        args.model,
        args.device,
        compile=args.compile,
        vram=getattr(args, "vram", None),
        comfy_dir=getattr(args, "comfy_dir", None),
    )
    settings = {f: getattr(request, f) for f in request.fields() if f not in ("prompt", "negative")}
    if not args.quiet:
        where = "CPU processes (gloo)" if not placement.cuda else ", ".join(placement.devices) + " (NCCL)"
        print(f"parallel {describe(layout)} on {where}", file=sys.stderr)
    gen, notice = generate(
        layout,
        placement,
        load_kwargs(args),
        request.prompt,
        request.negative,
        progress=None if args.quiet else progress_bar,
        step_cache=args.step_cache,
        compile=args.compile,
        **settings,
    )
    if notice and not args.quiet:
        print(notice, file=sys.stderr)
    write_generation(gen, out, args.quiet)
    return 0


def describe(layout: Layout) -> str:
    parts = [f"cfg {layout.cfg}"] * (layout.cfg > 1) + [f"sp {layout.sp}"] * (layout.sp > 1)
    return f"{' x '.join(parts) or 'sp 1'} ({layout.world} process{'es' * (layout.world > 1)})"


def progress_bar(total: int):
    """Rank 0's progress bar (a module-level function: the job carries it to the spawned ranks by name)."""
    from newbie.cli.progress import ProgressBar

    # stderr as the rank sees it, not as it was when ProgressBar was first imported
    return ProgressBar(total, stream=sys.stderr)

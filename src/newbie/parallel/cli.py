"""`newbie generate ... --parallel sp:2 | cfg:2 | cfg:2,sp:2`: one image on several processes it starts itself
(one per GPU with NCCL, or with --device cpu one per CPU process over gloo). Every combination the machine or
the model cannot run is refused in one line before any process starts."""

from __future__ import annotations

import sys
from pathlib import Path

from newbie.errors import NewbieError
from newbie.parallel.mesh import Layout, parse_layout

HELP = (
    "one image on several processes: sp:N (sequence parallel, N divides the model's key-value heads), "
    "cfg:2 (one process per CFG branch) or cfg:2,sp:N; one process per GPU, or with --device cpu per CPU "
    "process (gloo)"
)


def model_heads(model: str | None) -> tuple[int, int]:
    """(n_heads, n_kv_heads) of a model folder's transformer, from its config.json (no weights read)."""
    from newbie.config import SPECS
    from newbie.loading.dit import config_from_json, dit_source

    base = SPECS["newbie-exp0.1"].dit
    if model is None:
        from newbie.demo.model import default_model

        path = default_model()[0]
    else:
        path = Path(model)
    if not path.exists():
        raise NewbieError(f"{path}: no such model folder or file")
    cfg_path = dit_source(path)[1]
    cfg = config_from_json(cfg_path, base) if cfg_path else base
    return cfg.n_heads, cfg.n_kv_heads


def preflight(
    text: str, model: str | None, device: str | None, *, compile: bool = False, vram: str | None = None
):
    """--parallel and the flags it meets -> (Layout, Placement), or a one-line NewbieError."""
    from newbie.parallel.launch import Placement
    from newbie.parallel.sequence import check_heads

    layout = parse_layout(text)
    if vram:
        raise NewbieError("--parallel and --vram cannot be combined (each process holds the whole model)")
    if compile and layout.sp > 1:
        raise NewbieError("--compile and --parallel sp:N cannot be combined yet; drop one")
    check_heads(*model_heads(model), layout.sp)
    return layout, Placement.for_world(layout.world, device)


def load_kwargs(args) -> dict:
    return {
        "path": args.model,
        "dtype": args.dtype,
        "text_dtype": args.text_dtype,
        "vae_dtype": args.vae_dtype,
        "text_encoder": args.text_encoder,
        "clip_model": args.clip_model,
        "vae": args.vae,
        "quantize": getattr(args, "quantize", None),
    }


def cmd_generate_parallel(args) -> int:
    """`newbie generate` with --parallel (called by newbie.cli.main before anything is loaded)."""
    from newbie.cli.model_args import settings_from_args
    from newbie.cli.output import write_generation
    from newbie.parallel.runner import generate

    if args.from_image:
        raise NewbieError("--from re-makes an image on one device; drop --parallel")
    if not args.prompt:
        raise NewbieError("give a prompt (or @file)")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise NewbieError(f"--out must be a .png path, got '{out}'")
    layout, placement = preflight(
        args.parallel, args.model, args.device, compile=args.compile, vram=getattr(args, "vram", None)
    )
    request = settings_from_args(args)
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
        progress=not args.quiet,
        step_cache=args.step_cache,
        **settings,
    )
    if notice and not args.quiet:
        print(notice, file=sys.stderr)
    write_generation(gen, out, args.quiet)
    return 0


def describe(layout: Layout) -> str:
    parts = [f"cfg {layout.cfg}"] * (layout.cfg > 1) + [f"sp {layout.sp}"] * (layout.sp > 1)
    return f"{' x '.join(parts) or 'sp 1'} ({layout.world} process{'es' * (layout.world > 1)})"

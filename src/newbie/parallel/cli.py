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


def model_heads(model: str | None, comfy_dir: str | None = None) -> tuple[int, int]:
    """(n_heads, n_kv_heads) of a model folder's transformer (or --comfy-dir's), from its config (no weights
    read)."""
    from newbie.config import SPECS
    from newbie.loading.dit import config_from_json, dit_source

    base = SPECS["newbie-exp0.1"].dit
    if model is None and comfy_dir is not None:
        from newbie.loading.comfy import find_comfy_files

        model = find_comfy_files(comfy_dir)[0]["transformer"]
        if model is None:
            raise NewbieError(f"--comfy-dir {comfy_dir}: no transformer file in diffusion_models/ or unet/")
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
    text: str,
    model: str | None,
    device: str | None,
    *,
    compile: bool = False,
    vram: str | None = None,
    comfy_dir: str | None = None,
):
    """--parallel and the flags it meets -> (Layout, Placement), or a one-line NewbieError."""
    from newbie.parallel.launch import Placement
    from newbie.parallel.sequence import check_heads

    layout = parse_layout(text)
    if vram:
        raise NewbieError("--parallel and --vram cannot be combined (each process holds the whole model)")
    if compile and layout.sp > 1:
        raise NewbieError("--compile and --parallel sp:N cannot be combined yet; drop one")
    check_heads(*model_heads(model, comfy_dir), layout.sp)
    return layout, Placement.for_world(layout.world, device)


def cmd_generate_parallel(args) -> int:
    """`newbie generate` with --parallel (called by newbie.cli.main before anything is loaded)."""
    from newbie.cli.model_args import load_kwargs
    from newbie.cli.output import write_generation
    from newbie.cli.request_args import settings_from_args
    from newbie.parallel.runner import generate

    if args.from_image:
        raise NewbieError("--from re-makes an image on one device; drop --parallel")
    if not args.prompt:
        raise NewbieError("give a prompt (or @file)")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise NewbieError(f"--out must be a .png path, got '{out}'")
    layout, placement = preflight(
        args.parallel,
        args.model,
        args.device,
        compile=args.compile,
        vram=getattr(args, "vram", None),
        comfy_dir=getattr(args, "comfy_dir", None),
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

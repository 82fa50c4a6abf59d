"""--parallel checked before any process starts: the layout against the model's heads and the flags it meets
(`newbie generate --parallel` and `newbie serve --parallel` both ask here first)."""

from __future__ import annotations

from pathlib import Path

from newbie.errors import NewbieError
from newbie.parallel.mesh import parse_layout


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
    from newbie.demo.model import resolve_model

    path = Path(resolve_model(model)[0])  # None or "demo": the embedded demo model
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
    check_heads(*model_heads(model, comfy_dir), layout.sp)
    return layout, Placement.for_world(layout.world, device)

"""A model's own defaults (sampling, trained area, largest side): its `newbie_spec.json`, or, for a transformer
that comes without one (a single file, a ComfyUI set), the defaults its shapes imply: NewBie Exp0.1's for a
transformer of its width, the embedded demo model's for a demo-width one. Which one was used is said."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from newbie.config import DiTConfig, ModelSpec
from newbie.errors import NewbieError

SPEC_FILE = (
    "newbie_spec.json"  # optional, our own: sampling defaults of a model folder (the demo model has one)
)
SPEC_SIDECAR = ".newbie_spec.json"  # beside a single transformer file: <name>.newbie_spec.json
DEMO_SPEC = Path(__file__).resolve().parent.parent / "demo_model" / SPEC_FILE


def spec_path(folder) -> Path | None:
    """The spec of a ModelFolder: root/newbie_spec.json, or <transformer>.newbie_spec.json beside a single file."""
    if folder.root is not None:
        path = folder.root / SPEC_FILE
    elif Path(folder.transformer).is_file():
        t = Path(folder.transformer)
        path = t.with_name(t.name.removesuffix(".safetensors") + SPEC_SIDECAR)
    else:
        path = Path(folder.transformer) / SPEC_FILE
    return path if path.is_file() else None


def read_spec(path: Path, base: ModelSpec) -> ModelSpec:
    try:
        raw = json.loads(path.read_text())
        sampling = dataclasses.replace(base.sampling, **raw.get("sampling", {}))
        top = {k: v for k, v in raw.items() if k in ("name", "trained_pixels", "max_aspect", "max_side")}
        return dataclasses.replace(base, sampling=sampling, **top)
    except (OSError, ValueError, TypeError) as e:
        raise NewbieError(f"{path}: unreadable model spec ({e})") from None


def describe_defaults(spec: ModelSpec) -> str:
    d = spec.sampling
    return (
        f"{d.width}x{d.height}, {d.steps} steps, cfg {d.cfg:g}, {d.sampler}, shift {d.shift:g}, "
        f"cfg-trunc {d.cfg_trunc:g}, renorm-cfg {d.renorm_cfg:g}"
    )


def model_spec(folder, base: ModelSpec, dit: DiTConfig | None = None) -> tuple[ModelSpec, str]:
    """(spec, note). The note says where the defaults came from when the model did not bring them (empty for a
    model folder: a folder without a spec is the official layout, whose defaults `base` holds)."""
    path = spec_path(folder)
    if path is not None:
        return read_spec(path, base), ""
    if (
        folder.root is not None
    ):  # a model folder without a spec: the official layout, whose defaults are base's
        return base, ""
    if dit is not None and dit.dim != base.dit.dim:
        spec = read_spec(DEMO_SPEC, base)
        return spec, (
            f"{folder.name}: no {SPEC_FILE}; a {dit.dim}-wide transformer (NewBie Exp0.1's is {base.dit.dim}) "
            f"gets the demo model's defaults: {describe_defaults(spec)}"
        )
    return base, f"{folder.name}: no {SPEC_FILE}; NewBie Exp0.1's defaults: {describe_defaults(base)}"

"""A model's own defaults (sampling, trained area, largest side): its `newbie_spec.json`, or, for a transformer
that comes without one (a single file, a ComfyUI set), the defaults its shapes imply: NewBie Exp0.1's for a
transformer of its width, the embedded demo model's for a demo-width one. Which one was used is said."""

from __future__ import annotations

from pathlib import Path

from newbie.config import SPEC_FILE, DiTConfig, ModelSpec, read_spec

SPEC_SIDECAR = ".newbie_spec.json"  # beside a single transformer file: <name>.newbie_spec.json
DEMO_SPEC = Path(__file__).resolve().parent.parent / "demo_model" / SPEC_FILE


def sidecar_path(transformer: Path) -> Path:
    """The spec beside a single transformer file: <name>.newbie_spec.json."""
    return transformer.with_name(transformer.name.removesuffix(".safetensors") + SPEC_SIDECAR)


def spec_path(folder) -> Path | None:
    """The spec of a ModelFolder: root/newbie_spec.json, or <transformer>.newbie_spec.json beside a single file."""
    if folder.root is not None:
        path = folder.root / SPEC_FILE
    elif Path(folder.transformer).is_file():
        path = sidecar_path(Path(folder.transformer))
    else:
        path = Path(folder.transformer) / SPEC_FILE
    return path if path.is_file() else None


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

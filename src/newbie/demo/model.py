"""Which model `newbie generate` uses when no --model is given."""

from __future__ import annotations

import json
import os
from pathlib import Path

from newbie.errors import NewbieError

PACKAGED = Path(__file__).resolve().parent.parent / "demo_model"
REAL_HINT = "point --model at a NewBie-image-Exp0.1 folder (transformer/, text_encoder/, clip_model/, vae/) for real images"


def resolve_model(path, comfy_dir=None) -> tuple[Path | None, str]:
    """(model path, notice): no model (and no ComfyUI folder) or the word "demo" (when no such file or folder
    exists here) mean the demo model, with its notice; any other path is returned as given."""
    if (path is None and comfy_dir is None) or (str(path) == "demo" and not Path("demo").exists()):
        return default_model()
    return path, ""


def default_model() -> tuple[Path, str]:
    """(folder, one-line notice). The trained toy model shipped in the package, else a random-weight one."""
    if (PACKAGED / "transformer").is_dir():
        return PACKAGED, f"using the embedded toy demo model (128x128 toy world); {REAL_HINT}"
    root = Path(os.environ.get("NEWBIE_CACHE", Path.home() / ".cache" / "newbie")) / "random-tiny"
    if not (root / "vae" / "config.json").is_file():
        from newbie.demo.tiny import write_tiny_checkpoint

        try:
            write_tiny_checkpoint(root, seed=0)
            spec = {
                "name": "random-tiny",
                "trained_pixels": 128 * 128,
                "sampling": {"width": 128, "height": 128, "steps": 8, "sampler": "euler"},
            }
            (root / "newbie_spec.json").write_text(json.dumps(spec, indent=2))
        except OSError as e:
            raise NewbieError(f"cannot write the random demo model to {root} ({e})") from None
    return root, f"using a tiny RANDOM-WEIGHT model (the output is noise, not a picture); {REAL_HINT}"

"""torch's compile mega-cache for Pipeline.compile, kept between processes (opt-in: NEWBIE_COMPILE_MEGACACHE=1).

Inductor's own on-disk caches (model/fused.compile_cache) already spare a second process the kernel
compilation; the mega-cache (torch.compiler.save_cache_artifacts / load_cache_artifacts) bundles every compile
artifact of one run into one file, so a process can pre-load them all before compiling. It stays opt-in
because an earlier trial found it slower to load than the caches it replaces (3.9 s, H200, 2026-12-01) and
`newbie bench startup` measures both (cli_compiled_warm_s against cli_compiled_warm_megacache_s).

One file per key: torch version, GPU name, and the compiled model's shapes, dtype and compile options, so a
new torch, another GPU or another model never reads a stale bundle. A file that fails to load is deleted and
the run compiles as if it were absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

ENV = "NEWBIE_COMPILE_MEGACACHE"


def enabled() -> bool:
    return os.environ.get(ENV, "").strip().lower() in ("1", "on", "true", "yes")


def cache_key(model: torch.nn.Module, device: torch.device, options: dict) -> str:
    """A short hash naming everything a compiled artifact depends on."""
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    shapes = sorted((k, tuple(v.shape), str(v.dtype)) for k, v in model.state_dict().items())
    parts = {"torch": torch.__version__, "gpu": gpu, "shapes": shapes, "options": options}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def bundle_path(folder: str | Path, key: str) -> Path:
    return Path(folder) / "newbie-megacache" / f"{key}.bin"


def restore(path: Path) -> bool:
    """Load a saved bundle before compiling; False when there is none (or it was unreadable: then removed)."""
    if not enabled() or not path.is_file():
        return False
    try:
        return torch.compiler.load_cache_artifacts(path.read_bytes()) is not None
    except Exception:  # a damaged or incompatible bundle: compile from scratch and save a new one
        path.unlink(missing_ok=True)
        return False


def save(path: Path, restored: bool) -> bool:
    """After the warm-up compile: write this run's artifacts, unless they came from the bundle already.
    The file is written whole or not at all (temporary name, then rename)."""
    if not enabled() or restored:
        return False
    got = torch.compiler.save_cache_artifacts()
    if got is None:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(got[0])
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


@dataclass
class Bundle:
    path: Path
    restored: bool


def open_bundle(model: torch.nn.Module, device: torch.device, options: dict) -> Bundle | None:
    """Before the first compiled call: the bundle for this model and these options, loaded when saved by an
    earlier run. None when the mega-cache is off or inductor's cache folder is not set (fused.compile_cache
    sets it)."""
    folder = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not enabled() or not folder:
        return None
    path = bundle_path(folder, cache_key(model, device, options))
    return Bundle(path, restore(path))


def close_bundle(bundle: Bundle | None) -> None:
    """After the warm-up compile: save the bundle if this run made it."""
    if bundle is not None:
        save(bundle.path, bundle.restored)

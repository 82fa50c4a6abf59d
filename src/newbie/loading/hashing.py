"""Content hashes of weight files, cached by (path, size, mtime) so a 7 GB file is read once."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def _cache_file() -> Path:
    root = Path(os.environ.get("NEWBIE_CACHE", Path.home() / ".cache" / "newbie"))
    return root / "hashes.json"


def file_sha256(path: Path) -> str:
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    cache = _cache_file()
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(16 * 2**20):
            h.update(chunk)
    digest = h.hexdigest()
    known[key] = digest
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only home only costs re-hashing next time
    return digest


def files_sha256(paths: list[Path]) -> str:
    if len(paths) == 1:
        return file_sha256(paths[0])
    h = hashlib.sha256()
    for p in paths:
        h.update(file_sha256(p).encode())
    return h.hexdigest()


COMPONENTS = ("transformer", "text_encoder", "clip_model", "vae")


def component_hashes(folder) -> dict[str, str]:
    """sha256 of each component's weights (a ModelFolder's transformer, text_encoder, clip_model, vae): what a
    recipe records so that `--from` can tell when the loaded model is not the one that made the image.
    A component given as a folder hashes its .safetensors files in order; one file hashes that file."""
    from newbie.loading.dit import dit_source
    from newbie.loading.safetensors_io import weight_files

    out = {}
    for name in COMPONENTS:
        path = getattr(folder, name)
        if path is None:
            continue
        path = Path(path)
        if name == "transformer":
            files = dit_source(path)[0]
        else:
            files = [path] if path.is_file() else weight_files(path)
        out[name] = files_sha256(files)
    return out

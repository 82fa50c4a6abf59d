"""Content hashes of weight files, cached by (path, size, mtime) so a 7 GB file is read once."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path

_LOCK = threading.Lock()  # one read-modify-write of the cache file at a time (load() hashes in a thread)


def cache_file() -> Path:
    root = Path(os.environ.get("NEWBIE_CACHE", Path.home() / ".cache" / "newbie"))
    return root / "hashes.json"


def _known(cache: Path) -> dict:
    try:
        return json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}


def file_sha256(path: Path, cache: Path | None = None) -> str:
    """cache: the hash cache file (default: $NEWBIE_CACHE/hashes.json, resolved now)."""
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    cache = cache or cache_file()
    known = _known(cache)
    if key in known:
        return known[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(16 * 2**20):
            h.update(chunk)
    digest = h.hexdigest()
    with _LOCK:
        known = {**_known(cache), key: digest}  # re-read: another thread may have added one meanwhile
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix="hashes.", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(known))
            os.replace(tmp, cache)
        except OSError:
            pass  # a read-only home only costs re-hashing next time
    return digest


def files_sha256(paths: list[Path], cache: Path | None = None) -> str:
    if len(paths) == 1:
        return file_sha256(paths[0], cache)
    h = hashlib.sha256()
    for p in paths:
        h.update(file_sha256(p, cache).encode())
    return h.hexdigest()

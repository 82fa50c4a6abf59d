"""Content hashes of weight files, cached by (path, size, mtime) so a 7 GB file is read once."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path

_LOCK = threading.Lock()  # one read-modify-write of the cache file at a time (load() hashes in a thread)


def _fresh_lock_after_fork() -> None:
    # a process forked while a background hash thread held the lock would inherit it held, with no thread
    # left to release it (seen: `--parallel` workers forked during load() hung in their first hash)
    global _LOCK
    _LOCK = threading.Lock()


os.register_at_fork(after_in_child=_fresh_lock_after_fork)


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


COMPONENTS = ("transformer", "text_encoder", "clip_model", "vae")


def component_files(folder) -> dict[str, list[Path]]:
    """The weight files of each component a ModelFolder names: a folder's .safetensors files in order, or the
    one file given."""
    from newbie.loading.dit import dit_source
    from newbie.loading.safetensors_io import weight_files

    out = {}
    for name in COMPONENTS:
        path = getattr(folder, name)
        if path is None:
            continue
        path = Path(path)
        if name == "transformer":
            out[name] = dit_source(path)[0]
        else:
            out[name] = [path] if path.is_file() else weight_files(path)
    return out


def component_hashes(folder) -> dict[str, str]:
    """sha256 of each component's weights (a ModelFolder's transformer, text_encoder, clip_model, vae): what a
    recipe records so that `--from` can tell when the loaded model is not the one that made the image."""
    return {name: files_sha256(files) for name, files in component_files(folder).items()}


class BackgroundHashes:
    """component_hashes() in daemon threads, one per component, started as the model finishes loading: reading
    a new model's ~16 GB takes seconds to a minute, which then overlaps the first picture (hashlib releases
    the GIL) instead of delaying it. `get()` waits only for what it is asked for. The cache file is resolved
    here, so the threads write where this process was told to."""

    def __init__(self, folder):
        cache = cache_file()
        self._results: dict[str, str | Exception] = {}
        self._threads = {
            name: threading.Thread(
                target=self._hash, args=(name, files, cache), name="newbie-hash", daemon=True
            )
            for name, files in component_files(folder).items()
        }
        for thread in self._threads.values():
            thread.start()

    def _hash(self, name: str, files: list[Path], cache: Path) -> None:
        try:
            self._results[name] = files_sha256(files, cache)
        except Exception as e:  # a file removed or unreadable meanwhile: raised where the hash is wanted
            self._results[name] = e

    def get(self, names=COMPONENTS) -> dict[str, str]:
        out = {}
        for name in names:
            if name in self._threads:
                self._threads[name].join()
                result = self._results[name]
                if isinstance(result, Exception):
                    raise result
                out[name] = result
        return out

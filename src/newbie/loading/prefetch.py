"""Ask the operating system to start reading the weights while the process is still importing torch.

`newbie generate` spends its first seconds importing torch and starting CUDA, with the disk idle. From a cold
disk the load then waits on every byte; told early (posix_fadvise WILLNEED, from a background thread, before
torch is imported), the kernel reads the files into its page cache meanwhile, and the load finds them there.
Files already cached cost nothing; nothing is read into this process's memory (the page cache is the kernel's
to evict), so small-RAM machines and memory plans are unaffected."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def weight_paths(*given: str | None) -> list[Path]:
    """The .safetensors files under each given folder, or the given files themselves (ComfyUI single files);
    names that are not on this disk are skipped (they are the loader's to report)."""
    found: list[Path] = []
    for name in given:
        if not name:
            continue
        path = Path(name).expanduser()
        if path.is_dir():
            found += sorted(p for p in path.rglob("*.safetensors") if p.is_file())
        elif path.is_file() and path.suffix == ".safetensors":
            found.append(path)
    return list(dict.fromkeys(found))


def prefetch(paths: list[Path]) -> threading.Thread | None:
    """Start the kernel's read-ahead of every file from a daemon thread (returned, for tests to join); None
    where the platform has no posix_fadvise or there is nothing to read."""
    if not paths or not hasattr(os, "posix_fadvise"):
        return None
    thread = threading.Thread(target=_advise, args=(paths,), name="newbie-prefetch", daemon=True)
    thread.start()
    return thread


def _advise(paths: list[Path]) -> None:
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass  # a file system without read-ahead advice: the load reads it as before
        finally:
            os.close(fd)

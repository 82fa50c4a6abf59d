"""A one-line progress bar on stderr with it/s and ETA (no dependency)."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    def __init__(self, total: int, label: str = "denoise", stream=None, width: int = 28):
        # sys.stderr looked up now, not at import (tests and UIs swap it)
        self.total, self.label, self.stream, self.width = total, label, stream or sys.stderr, width
        self.start = time.perf_counter()
        self.tty = stream.isatty()

    def __call__(self, info: dict) -> None:
        done = info["step"]
        elapsed = time.perf_counter() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else 0.0
        filled = int(self.width * done / self.total)
        line = (
            f"{self.label} {done:>3}/{self.total} [{'#' * filled}{'.' * (self.width - filled)}] "
            f"{rate:5.2f} it/s  ETA {eta:4.1f}s"
        )
        if self.tty:
            self.stream.write("\r" + line + ("\n" if done == self.total else ""))
        elif done == self.total or done == 1:
            self.stream.write(line + "\n")
        self.stream.flush()

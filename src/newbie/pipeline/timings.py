"""Where a command's time went, as one line: `newbie generate` prints it (unless --quiet) and the startup bench
(newbie.bench.startup) reads it back from the command's output."""

from __future__ import annotations

import re
import time

TIMED = ("setup", "load", "compile", "encode", "denoise", "decode", "save")


def timings_line(times: dict, started: float | None = None) -> str:
    """'setup 4.91s  load 3.88s  encode 0.31s  denoise 6.90s  decode 0.45s  save 0.10s  total 16.6s': the
    phases present, in order, and the seconds since `started` (one line the startup bench reads back)."""
    parts = [f"{name} {times[name + '_s']:.2f}s" for name in TIMED if name + "_s" in times]
    if started is not None:
        parts.append(f"total {time.perf_counter() - started:.1f}s")
    return "  ".join(parts)


def parse_timings(text: str) -> dict:
    """timings_line's last occurrence in `text` -> {"load_s": 3.88, ..., "total_s": 16.6}; {} if absent."""
    found = {}
    for line in text.splitlines():
        pairs = re.findall(r"(\w+) (\d+(?:\.\d+)?)s", line)
        if pairs and pairs[0][0] in TIMED + ("total",) and all(n in TIMED + ("total",) for n, _ in pairs):
            found = {f"{n}_s": float(v) for n, v in pairs}
    return found

"""What `newbie generate` writes: each distinct warning once, the PNGs (recipe embedded), their paths and seeds,
timings. Images are never overwritten unless --out names the file: by default each one gets the next free
number, ComfyUI-style (outputs/newbie_00001.png, outputs/newbie_00002.png, ...)."""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from newbie.errors import NewbieError
from newbie.pipeline.timings import timings_line

DEFAULT_FOLDER, PREFIX = Path("outputs"), "newbie"


@dataclass
class OutputSpec:
    """Where images go: `file` (the name the user gave) or the next free numbers in `folder`."""

    folder: Path
    file: Path | None = None


def output_spec(out: str | None) -> OutputSpec:
    """--out: None or a folder (existing, or written with a trailing '/') -> numbered names in it; a .png path
    -> that file (a batch adds -1, -2, ...). Checked before any weights load: a .png name, a writable folder."""
    from newbie.cli.preflight import check_writable_folder

    if out is None:
        spec = OutputSpec(DEFAULT_FOLDER)
    elif out.endswith(("/", "\\")) or Path(out).is_dir():
        spec = OutputSpec(Path(out))
    elif Path(out).suffix.lower() != ".png":
        raise NewbieError(f"--out must be a .png path or a folder, got '{out}'")
    else:
        spec = OutputSpec(Path(out).parent, Path(out))
    check_writable_folder(spec.folder)
    return spec


def numbered_paths(folder: Path, n: int, prefix: str = PREFIX) -> list[Path]:
    """The next n free names PREFIX_00001.png ... after the highest number already in `folder`."""
    pattern = re.compile(rf"{re.escape(prefix)}_(\d+)\.png$")
    taken = [int(m.group(1)) for p in folder.glob(f"{prefix}_*.png") if (m := pattern.match(p.name))]
    start = max(taken, default=0) + 1
    return [folder / f"{prefix}_{k:05d}.png" for k in range(start, start + n)]


def output_paths(spec: OutputSpec, n: int) -> list[Path]:
    """The named file for one image, FILE-1.png, FILE-2.png ... for a batch; else the next free numbers."""
    from newbie.pipeline.images import batch_paths

    return numbered_paths(spec.folder, n) if spec.file is None else batch_paths(spec.file, n)


def write_generation(
    gen, spec: OutputSpec, quiet: bool, phases: dict | None = None, started: float | None = None
) -> None:
    """The images, their paths on stdout; unless quiet, warnings, seeds and where the time went: the phases
    before the pipeline (`phases`: setup, load, compile), the pipeline's own, saving, and the total since
    `started` (perf_counter when the command began)."""
    from newbie.pipeline.images import save_png

    t0 = time.perf_counter()

    shown = set()
    for rec in gen.recipes:
        for msg in rec.warnings:
            if msg not in shown:
                shown.add(msg)
                print(f"warning: {msg}", file=sys.stderr)
    for image, rec, path in zip(gen.images, gen.recipes, output_paths(spec, len(gen.images))):
        try:
            save_png(image, rec, path)
        except OSError as e:  # a full disk, a folder removed meanwhile: the user's to fix, not a bug
            raise NewbieError(f"{path}: cannot write the image ({e.strerror or e})") from None
        if not quiet:
            print(f"seed {rec.seed} -> {path}", file=sys.stderr)
        print(path)
    if not quiet:
        times = {**(phases or {}), **gen.timings, "save_s": time.perf_counter() - t0}
        print(timings_line(times, started), file=sys.stderr)

"""A training folder as artists already keep it: images with a same-stem `.txt` (comma tags) or `.xml`
caption, optionally in kohya `N_name/` folders whose images count N times per epoch; and the aspect-ratio
buckets the images are cropped to."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from newbie.errors import NewbieError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
REPEAT_FOLDER = re.compile(r"^(\d+)_(.+)$")
MAX_ASPECT = 4.0  # the official size list's limit (spec §4.4)


class DataError(NewbieError):
    """A training folder or file the trainer cannot use; the message names it."""


@dataclass(frozen=True)
class Item:
    image: Path
    caption: str
    repeats: int
    size: tuple[int, int]  # (width, height) of the file
    folder: str  # the folder it came from, for the tag statistics


def scan(data_dir: str | Path, min_side: int = 16) -> list[Item]:
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    items = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        rel = path.relative_to(root)
        folder = rel.parts[0] if len(rel.parts) > 1 else "."
        m = REPEAT_FOLDER.match(folder)
        repeats = int(m.group(1)) if m else 1
        if repeats < 1:
            continue  # kohya: a 0_ folder is not trained on
        size = _image_size(path)
        if min(size) < min_side or max(size) / min(size) > MAX_ASPECT:
            raise DataError(
                f"{path}: {size[0]}x{size[1]} cannot be trained on (sides >= {min_side} px, aspect <= "
                f"{MAX_ASPECT:g})"
            )
        items.append(Item(path, read_caption(path), repeats, size, folder))
    if not items:
        raise DataError(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    return items


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: unreadable image ({e})") from None


def read_caption(image: Path) -> str:
    for suffix in (".txt", ".xml"):
        path = image.with_suffix(suffix)
        if path.is_file():
            try:
                text = path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as e:
                raise DataError(f"{path}: unreadable caption ({e})") from None
            if not text:
                raise DataError(f"{path}: empty caption")
            return " ".join(text.split())  # one line, as the official trainer feeds it
    raise DataError(f"{image}: no caption (expected {image.with_suffix('.txt').name} or .xml beside it)")


def tags(caption: str) -> list[str]:
    """Comma tags of a caption; in XML, the comma lists inside the elements."""
    text = re.sub(r"<[^>]+>", ",", caption) if "<" in caption else caption
    return [t.strip() for t in text.split(",") if t.strip()]


def tag_frequency(items: list[Item]) -> dict[str, dict[str, int]]:
    """{folder: {tag: count}} as kohya's ss_tag_frequency."""
    out: dict[str, Counter] = {}
    for it in items:
        out.setdefault(it.folder, Counter()).update(tags(it.caption))
    return {k: dict(v.most_common()) for k, v in out.items()}


def make_buckets(resolution: int, max_aspect: float, step: int) -> list[tuple[int, int]]:
    """(W, H) sizes, multiples of `step`, with W*H <= resolution^2 and aspect <= max_aspect; for each width
    the tallest such height, kept when its aspect is allowed (the official trainer's crop-size list)."""
    area = resolution * resolution
    out = []
    for w in range(step, int(resolution * math.sqrt(max_aspect)) + 1, step):
        h = area // w // step * step
        if h >= step and max(w, h) / min(w, h) <= max_aspect + 1e-9:
            out.append((w, h))
    return out or [(resolution // step * step,) * 2]


def bucket_for(size: tuple[int, int], buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket nearest in log aspect ratio (ties: the larger area)."""
    r = math.log(size[0] / size[1])
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - r), -b[0] * b[1]))


def load_image(path: Path, bucket: tuple[int, int]) -> torch.Tensor:
    """(3, H, W) in [0, 1]: scaled to cover the bucket, then centre-cropped."""
    w, h = bucket
    with Image.open(path) as im:
        im = im.convert("RGB")
        scale = max(w / im.width, h / im.height)
        rw, rh = max(w, round(im.width * scale)), max(h, round(im.height * scale))
        if (rw, rh) != im.size:
            im = im.resize((rw, rh), Image.Resampling.LANCZOS)
        left, top = (rw - w) // 2, (rh - h) // 2
        im = im.crop((left, top, left + w, top + h))
        data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    return data.view(h, w, 3).permute(2, 0, 1).float() / 255.0


def epoch_order(counts: list[int], buckets: list[tuple[int, int]], batch: int, gen: torch.Generator):
    """One epoch's batches: each entry index repeated `counts[i]` times, shuffled, grouped into batches of
    one bucket, and the batches shuffled. Deterministic given the generator state."""
    entries = [i for i, n in enumerate(counts) for _ in range(n)]
    perm = torch.randperm(len(entries), generator=gen).tolist()
    by_bucket: dict[tuple[int, int], list[int]] = {}
    for j in perm:
        by_bucket.setdefault(buckets[entries[j]], []).append(entries[j])
    batches = [ids[k : k + batch] for _, ids in sorted(by_bucket.items()) for k in range(0, len(ids), batch)]
    return [batches[j] for j in torch.randperm(len(batches), generator=gen).tolist()]

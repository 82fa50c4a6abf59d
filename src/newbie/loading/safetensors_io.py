"""Reading safetensors files (single or sharded) with errors that name the file."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

from newbie.errors import CheckpointError


def read_header(path: Path) -> dict[str, dict]:
    """Tensor name -> {"dtype", "shape"} from the header alone, checking that the data region is complete."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ValueError("file is shorter than a safetensors header")
            (n,) = struct.unpack("<Q", raw)
            if n > min(size - 8, 100 * 2**20):
                raise ValueError("header length is out of range")
            header = json.loads(f.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: damaged safetensors file ({e})") from None
    _check_header(path, header)
    header.pop("__metadata__", None)
    end = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
    if 8 + n + end > size:
        raise CheckpointError(
            f"{path}: damaged safetensors file (truncated: {size} bytes, needs {8 + n + end})"
        )
    return {k: {"dtype": v["dtype"], "shape": tuple(v["shape"])} for k, v in header.items()}


def _check_header(path: Path, header) -> None:
    """The header's shape (a JSON object of {dtype, shape, data_offsets}): a damaged or hand-made file is
    bad input named in one line, not a KeyError deep in the loader."""

    def ints(value, n=None) -> bool:
        ok = isinstance(value, list) and all(isinstance(x, int) and x >= 0 for x in value)
        return ok and (n is None or len(value) == n)

    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: damaged safetensors file (the header is not a JSON object)")
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("dtype"), str)
            and ints(entry.get("shape"))
            and ints(entry.get("data_offsets"), 2)
        ):
            raise CheckpointError(
                f"{path}: damaged safetensors file (tensor '{str(name)[:80]}' lacks a dtype, shape or "
                "data_offsets)"
            )


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a component folder: an index's shards, or the *.safetensors files."""
    for index in sorted(folder.glob("*.safetensors.index.json")):
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{index}: unreadable shard index ({e})") from None
        root = folder.resolve()
        outside = [
            n for n in names if not isinstance(n, str) or not (folder / n).resolve().is_relative_to(root)
        ]
        if outside:  # a shard named ../../x, an absolute path, or a symlink out of the model folder
            raise CheckpointError(f"{index}: shard '{str(outside[0])[:80]}' is outside the model folder")
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise CheckpointError(f"{folder}: shard(s) missing: {', '.join(missing)}")
        return [folder / n for n in names]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{folder}: no .safetensors weights found")
    return files


def component_files(path: Path) -> list[Path]:
    """A component's weight files: the file itself (a ComfyUI-style single file) or its folder's files."""
    return [path] if path.is_file() else weight_files(path)


def meta_tensors(headers: dict[str, dict], keys=None) -> dict[str, torch.Tensor]:
    """Shape-only stand-ins for checking a file's keys and shapes without reading its data."""
    return {
        k: torch.empty(h["shape"], device="meta") for k, h in headers.items() if keys is None or k in keys
    }


def read_headers(files: list[Path]) -> dict[str, dict]:
    merged: dict[str, dict] = {}
    for f in files:
        merged.update(read_header(f))
    return merged


def load_tensors(
    files: list[Path],
    keys: set[str] | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """Load tensors (all, or the named ones), cast to `dtype` as they are read."""
    from safetensors import safe_open

    out: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt", device=str(device)) as sf:
                for k in sf.keys():
                    if keys is not None and k not in keys:
                        continue
                    t = sf.get_tensor(k)
                    out[k] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
        except Exception as e:  # safetensors raises its own error types for damaged files
            if isinstance(e, CheckpointError):
                raise
            raise CheckpointError(f"{f}: damaged safetensors file ({e})") from None
    return out

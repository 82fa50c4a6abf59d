"""Finding and reading an adapter on disk: a PEFT folder (adapter_model.safetensors + adapter_config.json, as
NewbieLoraTrainer saves it) or a single .safetensors file. Only safetensors: pickled .bin/.pt files can run
code."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from newbie.errors import NewbieError
from newbie.loading.hashing import file_sha256
from newbie.loading.safetensors_io import load_tensors

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"


@dataclass
class AdapterFile:
    weights: Path
    sha256: str  # of the weights file, like the hashes model sites show
    tensors: dict[str, torch.Tensor]  # float32, CPU
    metadata: dict[str, str] = field(default_factory=dict)  # safetensors header metadata
    config: dict = field(default_factory=dict)  # adapter_config.json, when there is one
    config_sha256: str = ""


def locate(path: str | Path) -> tuple[Path, Path | None]:
    """-> (weights file, adapter_config.json or None)."""
    p = Path(path).expanduser()
    if p.is_dir():
        weights = p / WEIGHTS_NAME
        if not weights.is_file():
            found = sorted(p.glob("*.safetensors"))
            if len(found) != 1:
                raise NewbieError(
                    f"{p}: no {WEIGHTS_NAME} in this folder"
                    + (f" (and {len(found)} other .safetensors files: give one)" if found else "")
                )
            weights = found[0]
        config = p / CONFIG_NAME
        return weights, config if config.is_file() else None
    if not p.is_file():
        raise NewbieError(f"{p}: no such adapter file or folder")
    if p.suffix != ".safetensors":
        raise NewbieError(
            f"{p}: adapters are read from .safetensors files only (pickled .bin/.pt files can run code)"
        )
    # A sibling adapter_config.json belongs to this file only under PEFT's own file name; a renamed file in a
    # folder of several adapters must not borrow another adapter's alpha.
    config = p.with_name(CONFIG_NAME)
    return p, config if p.name == WEIGHTS_NAME and config.is_file() else None


def read_adapter(path: str | Path) -> AdapterFile:
    weights, config_path = locate(path)
    tensors = load_tensors([weights], dtype=torch.float32)
    if not tensors:
        raise NewbieError(f"{weights}: holds no tensors")
    out = AdapterFile(
        weights=weights, sha256=file_sha256(weights), tensors=tensors, metadata=_metadata(weights)
    )
    if config_path is not None:
        raw = config_path.read_bytes()
        try:
            out.config = json.loads(raw)
        except ValueError as e:
            raise NewbieError(f"{config_path}: unreadable adapter config ({e})") from None
        if not isinstance(out.config, dict):
            raise NewbieError(f"{config_path}: adapter config is not a JSON object")
        _check_config(config_path, out.config)
        out.config_sha256 = hashlib.sha256(raw).hexdigest()
    return out


def _check_config(path: Path, config: dict) -> None:
    """The fields the engine reads, with the types PEFT writes: a wrong one is the file's fault (one line),
    not a crash deep in the alpha lookup."""
    import re

    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    problems = []
    if "r" in config and not (isinstance(config["r"], int) and not isinstance(config["r"], bool)):
        problems.append(f"'r' must be an integer, got {json.dumps(config['r'])[:40]}")
    if config.get("lora_alpha") is not None and not number(config["lora_alpha"]):
        problems.append(f"'lora_alpha' must be a number, got {json.dumps(config['lora_alpha'])[:40]}")
    if "use_rslora" in config and not isinstance(config["use_rslora"], bool):
        problems.append("'use_rslora' must be true or false")
    patterns = config.get("alpha_pattern") or {}
    if not isinstance(patterns, dict):
        problems.append("'alpha_pattern' must be an object")
    else:
        for pattern, value in patterns.items():
            try:
                re.compile(pattern)
            except re.error as e:
                problems.append(f"'alpha_pattern' key '{pattern[:40]}' is not a regular expression ({e})")
            if not number(value):
                problems.append(f"'alpha_pattern' value for '{pattern[:40]}' must be a number")
    if problems:
        raise NewbieError(f"{path}: bad adapter config: {problems[0]}")


def files_inside(path: str | Path, root: Path) -> tuple[Path, Path | None]:
    """locate(path), refused unless the weights and the config, symlinks followed, are inside `root`: a
    link in an adapter folder must not read a file the server never meant to expose."""
    root = Path(root).resolve()
    weights, config = locate(path)
    for f in (weights, config):
        if f is not None and not f.resolve().is_relative_to(root):
            raise NewbieError(f"adapter file '{f.name}' resolves outside the adapters folder")
    return weights, config


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # the tensors were already read successfully; metadata is optional
        return {}

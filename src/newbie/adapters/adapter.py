"""One adapter file -> a checked set of per-layer deltas (spec §6), or an AdapterMismatch naming the first key
that does not fit the transformer."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor, nn

from newbie.adapters.deltas import Delta, LokrDelta, LoraDelta
from newbie.adapters.files import WEIGHTS_NAME, AdapterFile, read_adapter
from newbie.adapters.keys import AdapterMismatch, ModuleNames, split_key

LORA_PARTS = {"lora_down", "lora_up", "alpha"}
LOKR_PARTS = {"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "alpha"}


@dataclass
class Adapter:
    path: Path  # the weights file
    sha256: str
    config_sha256: str  # "" when there is no adapter_config.json
    kind: str  # "lora", "lokr" or "lora+lokr"
    deltas: dict[str, Delta]  # transformer Linear name -> its weight change at strength 1
    notes: list[str] = field(default_factory=list)  # things the user should know (shown as request warnings)

    @property
    def name(self) -> str:
        return self.path.parent.name if self.path.name == WEIGHTS_NAME else self.path.stem


class AdaptedLinear(nn.Module):
    """A layer plus unfused adapters: base(x) + Σ strength·ΔW·x (LoRA: two thin matmuls). A module in the
    layer's place, not a hook, so a compiled block traces it like any other layer and keeps it.

    The deltas follow the activations to their device and dtype on first use: offloading plans move the
    transformer between CPU and GPU, and quantized layers compute in the activation dtype."""

    def __init__(self, base: nn.Module, deltas: list[tuple[Delta, float]]):
        super().__init__()
        self.base = base
        self.deltas = deltas
        self.placed: tuple = (None, None, [])  # (device, dtype, deltas there); one placement kept
        self.register_state_dict_post_hook(_official_keys)
        w = getattr(base, "weight", None)
        if w is not None and w.is_floating_point() and w.element_size() > 1:
            self._place(w.device, w.dtype)  # the usual case, placed now: outside any compiled graph

    def _place(self, device, dtype) -> list[tuple[Delta, float]]:
        self.placed = (device, dtype, [(d.to(device, dtype), s) for d, s in self.deltas])
        return self.placed[2]

    def forward(self, x: Tensor) -> Tensor:
        out = self.base(x)
        device, dtype, placed = self.placed
        if device != x.device or dtype != x.dtype:
            placed = self._place(x.device, x.dtype)
        for d, s in placed:
            out = out + s * d.forward(x).to(out.dtype)
        return out


def _official_keys(module: nn.Module, state_dict: dict, prefix: str, local_metadata) -> None:
    # the state dict keeps the checkpoint's keys while a layer is wrapped: "x.base.weight" -> "x.weight"
    for key in [k for k in state_dict if k.startswith(prefix + "base.")]:
        state_dict[prefix + key[len(prefix) + 5 :]] = state_dict.pop(key)


def base_layers(dit: nn.Module) -> dict[str, nn.Module]:
    """Name -> module as the checkpoint names it: an AdaptedLinear counts as the layer it wraps."""
    out = {}
    for name, m in dit.named_modules():
        parent, _, leaf = name.rpartition(".")
        if leaf == "base" and isinstance(out.get(parent), AdaptedLinear):
            out[parent] = m
            continue
        out[name] = m
    return out


def linear_shapes(dit: nn.Module) -> dict[str, tuple[int, int]]:
    """Name -> (out, in) of every Linear-like layer (quantized replacements keep in/out_features)."""
    return {
        name: (m.out_features, m.in_features)
        for name, m in base_layers(dit).items()
        if isinstance(m, nn.Linear) or (hasattr(m, "in_features") and hasattr(m, "out_features"))
    }


def load_adapter(path: str | Path, shapes: dict[str, tuple[int, int]]) -> Adapter:
    f = read_adapter(path)
    deltas, notes = build_deltas(f, ModuleNames(shapes))
    kinds = sorted({"lora" if isinstance(d, LoraDelta) else "lokr" for d in deltas.values()})
    return Adapter(f.weights, f.sha256, f.config_sha256, "+".join(kinds), deltas, notes)


def build_deltas(f: AdapterFile, names: ModuleNames) -> tuple[dict[str, Delta], list[str]]:
    problems: list[tuple[str, str]] = []  # (key, message): the smallest key is reported
    groups: dict[str, dict[str, tuple[str, Tensor]]] = {}
    for key in sorted(f.tensors):
        try:
            path, part = split_key(key)
            module = names.resolve(path, key)
        except AdapterMismatch as e:
            problems.append((key, str(e)))
            continue
        groups.setdefault(module, {})[part] = (key, f.tensors[key])
    deltas: dict[str, Delta] = {}
    no_alpha = False
    for module, parts in groups.items():
        try:
            if parts.keys() <= LORA_PARTS:
                deltas[module], guessed = _lora(module, parts, f)
                no_alpha |= guessed
            elif parts.keys() <= LOKR_PARTS:
                deltas[module] = _lokr(module, parts)
            else:
                raise AdapterMismatch(
                    f"key '{min(k for k, _ in parts.values())}': layer {module} mixes LoRA and LoKr tensors"
                )
            _check_shape(module, deltas[module], parts, names.shapes[module])
        except AdapterMismatch as e:
            problems.append((min(k for k, _ in parts.values()), str(e)))
    if problems:
        raise AdapterMismatch(f"{f.weights}: does not fit this model: {min(problems)[1]}")
    if not deltas:
        raise AdapterMismatch(f"{f.weights}: holds no LoRA/LoKr layers")
    notes = []
    if no_alpha:
        notes.append(
            f"{f.weights.name}: no alpha found (no adapter_config.json, alpha tensors or metadata); "
            "using scale 1 (alpha = rank), as ComfyUI does"
        )
    return deltas, notes


def _need(parts: dict, name: str, module: str) -> Tensor:
    if name not in parts:
        have = ", ".join(k for k, _ in parts.values())
        raise AdapterMismatch(
            f"key '{min(k for k, _ in parts.values())}': layer {module} has no {name} tensor (found {have})"
        )
    key, t = parts[name]
    if t.ndim != 2:
        raise AdapterMismatch(f"key '{key}': expected a matrix, got shape {list(t.shape)}")
    return t


def _lora(module: str, parts: dict, f: AdapterFile) -> tuple[LoraDelta, bool]:
    down, up = _need(parts, "lora_down", module), _need(parts, "lora_up", module)
    rank = down.shape[0]
    if up.shape[1] != rank:
        raise AdapterMismatch(f"key '{parts['lora_up'][0]}': rank {up.shape[1]} != lora_A rank {rank}")
    alpha, guessed = _lora_alpha(module, parts, f, rank)
    rs = bool(f.config.get("use_rslora", False))
    return LoraDelta(down, up, alpha / (math.sqrt(rank) if rs else rank)), guessed


def _lora_alpha(module: str, parts: dict, f: AdapterFile, rank: int) -> tuple[float, bool]:
    """Alpha from, in order: the layer's own alpha tensor (kohya/ComfyUI files), adapter_config.json (PEFT:
    alpha_pattern, then lora_alpha), the safetensors metadata; else alpha = rank (scale 1), flagged as a
    guess."""
    if "alpha" in parts:
        return float(parts["alpha"][1].reshape(-1)[0]), False
    if f.config:
        for pattern, value in (f.config.get("alpha_pattern") or {}).items():
            if re.fullmatch(rf"(.*\.)?(?:{pattern})", module):
                return float(value), False
        if f.config.get("lora_alpha") is not None:
            return float(f.config["lora_alpha"]), False
    try:
        return float(f.metadata["lora_alpha"]), False
    except (KeyError, ValueError):
        return float(rank), True


def _lokr_factor(parts: dict, name: str, module: str):
    """(full, a, b): the full Kronecker factor `name`, or its low-rank pair name_a @ name_b (shapes checked)."""
    if name in parts:
        return _need(parts, name, module), None, None
    a, b = _need(parts, f"{name}_a", module), _need(parts, f"{name}_b", module)
    if a.shape[1] != b.shape[0]:
        raise AdapterMismatch(
            f"key '{parts[f'{name}_b'][0]}': factor shapes {list(a.shape)} @ {list(b.shape)} do not chain"
        )
    return None, a, b


def _lokr(module: str, parts: dict) -> LokrDelta:
    w1, w1_a, w1_b = _lokr_factor(parts, "lokr_w1", module)
    if w1 is None:
        w1 = w1_a @ w1_b
    w2, w2_a, w2_b = _lokr_factor(parts, "lokr_w2", module)  # w2 stays factored: the delta applies it lazily
    # LyCORIS: scale = alpha / rank when a factor is low-rank (rank of w1_a, else of w2_a); full factors: 1.
    rank = (
        parts["lokr_w1_a"][1].shape[1]
        if "lokr_w1_a" in parts
        else (w2_a.shape[1] if w2_a is not None else None)
    )
    alpha = float(parts["alpha"][1].reshape(-1)[0]) if "alpha" in parts else 0.0
    scale = alpha / rank if rank and alpha else 1.0  # a missing or zero alpha means alpha = rank in LyCORIS
    return LokrDelta(w1, w2, w2_a, w2_b, scale)


def _check_shape(module: str, delta: Delta, parts: dict, want: tuple[int, int]) -> None:
    if tuple(delta.shape) != tuple(want):
        key = min(k for k, _ in parts.values())
        raise AdapterMismatch(
            f"key '{key}': its weight change is {list(delta.shape)} but layer {module} is {list(want)}"
        )

"""The adapters active on the transformer for the current request.

Unfused: each adapted Linear is wrapped in an AdaptedLinear that adds strength·ΔW·x (LoRA: two thin matmuls),
so switching per request only swaps modules, and compiled blocks trace the wrapper like any layer. Fused: ΔW is added into the weights (no per-step cost); the base weights are
kept on the CPU and copied back, so removing an adapter restores them bit for bit without reloading the model.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from newbie.adapters.adapter import AdaptedLinear, Adapter, base_layers, linear_shapes, load_adapter
from newbie.adapters.deltas import Delta
from newbie.errors import NewbieError
from newbie.precision.fp8 import plain_float_weight

CACHE_SIZE = 8  # parsed adapters kept in memory (CPU), most recently used first


@dataclass(frozen=True)
class ActiveLora:
    adapter: Adapter
    strength: float


class AdapterStack:
    def __init__(self):
        self._cache: OrderedDict[tuple, Adapter] = OrderedDict()
        self._dit: nn.Module | None = None
        self._wrapped: list[tuple[nn.Module, str, nn.Module]] = []  # (parent, attribute, the base layer)
        self._originals: dict[str, Tensor] = {}  # fused: layer name -> base weight (CPU copy)
        self._state: tuple = ()  # what is applied now: (fused, ((sha256, strength), ...))
        self.active: list[ActiveLora] = []

    # -- loading --

    def load(self, dit: nn.Module, path: str | Path) -> Adapter:
        """Parse and check an adapter against `dit` (cached by path, size and mtime)."""
        p = Path(path).expanduser().resolve()
        try:
            st = p.stat()
        except OSError:
            raise NewbieError(f"{path}: no such adapter file or folder") from None
        key = (str(p), st.st_size, st.st_mtime_ns, id(dit))
        if p.is_dir():  # a PEFT folder: its two files decide
            key += tuple(
                (f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in sorted(p.iterdir()) if f.is_file()
            )
        if key not in self._cache:
            self._cache[key] = load_adapter(p, linear_shapes(dit))
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key]

    def resolve(self, dit: nn.Module, loras) -> list[ActiveLora]:
        """Request form -> checked ActiveLora list. Accepts 'path', 'path:0.8', (path, strength),
        {"path": ..., "strength": ...} and ActiveLora."""
        out = []
        for item in loras or []:
            if isinstance(item, ActiveLora):
                out.append(item)
                continue
            if isinstance(item, (str, Path)):
                path, strength = parse_lora(item)
            elif isinstance(item, dict):  # JSON form: {"path": ..., "strength": ...}
                path, strength = item.get("path"), item.get("strength", 1.0)
            elif isinstance(item, (tuple, list)) and len(item) == 2:
                path, strength = item
            else:
                raise NewbieError(f"adapter entry {item!r}: give 'path', 'path:strength' or (path, strength)")
            if not path:
                raise NewbieError(f"adapter entry {item!r} gives no path")
            try:
                strength = float(strength)
            except (TypeError, ValueError):
                raise NewbieError(f"adapter strength must be a number, got {strength!r}") from None
            if not math.isfinite(strength) or abs(strength) > 10:
                raise NewbieError(
                    f"adapter strength must be a finite number within [-10, 10], got {strength}"
                )
            out.append(ActiveLora(self.load(dit, path), strength))
        return out

    # -- applying --

    def activate(self, dit: nn.Module, active: list[ActiveLora], fused: bool = False) -> list[str]:
        """Make `dit` carry exactly these adapters (none: the base model); returns notes for the request.
        A no-op when nothing changed. Fusing needs plain float weights; quantized ones get wrapped instead."""
        used = [a for a in active if a.strength != 0]  # strength 0 is exactly the base model
        modules = base_layers(dit)
        per_layer: dict[str, list[tuple[Delta, float]]] = {}
        for a in used:
            for name, delta in a.adapter.deltas.items():
                per_layer.setdefault(name, []).append((delta, a.strength))
        notes = []
        if fused and not all(plain_float_weight(modules[name]) for name in per_layer):
            fused = False
            notes.append(
                "adapters applied unfused: the transformer's weights are quantized, so they cannot be fused"
            )
        state = (
            (fused, tuple((a.adapter.sha256, a.adapter.config_sha256, a.strength) for a in used))
            if used
            else ()
        )
        if state == self._state and dit is self._dit:
            self.active = list(active)
            return notes
        self.clear()
        self.active = list(active)
        if not used:
            return notes
        self._dit = dit
        try:
            for name, deltas in per_layer.items():
                if fused:
                    self._fuse(modules[name], name, deltas)
                else:
                    self._wrap(dit, name, modules[name], deltas)
        except BaseException:
            self.clear()
            raise
        self._state = state
        return notes

    def clear(self) -> None:
        """Remove every adapter: wrapped layers back in place, fused weights restored bit for bit."""
        for parent, attr, layer in reversed(self._wrapped):
            setattr(parent, attr, layer)
        self._wrapped = []
        if self._originals:
            modules = base_layers(self._dit)
            with torch.no_grad():
                for name, weight in self._originals.items():
                    modules[name].weight.copy_(weight)
        self._originals = {}
        self._state = ()
        self._dit = None
        self.active = []

    def _wrap(self, dit: nn.Module, name: str, layer: nn.Module, deltas: list[tuple[Delta, float]]) -> None:
        parent_name, _, attr = name.rpartition(".")
        parent = dit.get_submodule(parent_name)
        setattr(parent, attr, AdaptedLinear(layer, deltas))
        self._wrapped.append((parent, attr, layer))

    def _fuse(self, module: nn.Module, name: str, deltas: list[tuple[Delta, float]]) -> None:
        # In place: offloading plans keep weights in pinned CPU tensors between stages, and so carry it along.
        w = module.weight
        self._originals[name] = w.detach().to("cpu", copy=True)
        total = w.detach().float()
        for d, s in deltas:
            total = total + s * d.to(w.device, torch.float32).weight()
        with torch.no_grad():
            w.copy_(total.to(w.dtype))


def parse_lora(text: str | Path) -> tuple[str, float]:
    """'path' -> (path, 1.0); 'path:0.8' -> (path, 0.8). The strength is split off the last ':' only when it
    is a number, so 'C:/loras/a.safetensors' stays a path."""
    text = str(text)
    head, sep, tail = text.rpartition(":")
    if sep and head:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return text, 1.0

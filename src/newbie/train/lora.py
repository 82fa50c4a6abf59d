"""Trainable LoRA layers attached to a frozen NextDiT from outside, by forward hooks: the model's own modules
and state-dict names stay as they are, so the trained layers are named exactly as the checkpoint's Linears."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from newbie.errors import NewbieError

# the official NewbieLoraTrainer's targets (spec §6), matched as name suffixes in every block
DEFAULT_TARGETS = (
    "attention.qkv",
    "attention.out",
    "feed_forward.w2",
    "time_text_embed.1",
    "clip_text_pooled_proj.1",
)
FULL_TARGETS = DEFAULT_TARGETS + ("feed_forward.w1", "feed_forward.w3", "adaLN_modulation.1")


def parse_targets(text: str) -> tuple[str, ...]:
    """'default', 'full' or a comma list of layer-name suffixes."""
    if text in ("default", ""):
        return DEFAULT_TARGETS
    if text == "full":
        return FULL_TARGETS
    return tuple(t.strip() for t in text.split(",") if t.strip())


def target_layers(dit: nn.Module, targets: tuple[str, ...]) -> dict[str, nn.Linear]:
    """Name -> Linear for every Linear whose name is, or ends in, one of the targets."""
    found = {
        name: m
        for name, m in dit.named_modules()
        if isinstance(m, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets)
    }
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in found)]
    if missing:
        raise NewbieError(
            f"--targets: no layer named '{missing[0]}' in this model (e.g. attention.qkv, feed_forward.w1)"
        )
    return found


class LoraLayer(nn.Module):
    """delta(x) = (alpha / rank) * up(down(x)); up starts at zero so training starts from the base model."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float, gen: torch.Generator):
        super().__init__()
        self.scale = alpha / rank
        down = torch.empty(rank, in_features)
        # PEFT's default init (kaiming-uniform, a = sqrt(5)), drawn from our own generator for reproducibility
        bound = 1 / math.sqrt(in_features)
        down.uniform_(-bound, bound, generator=gen)
        self.lora_down = nn.Parameter(down)
        self.lora_up = nn.Parameter(torch.zeros(out_features, rank))

    def forward(self, x: Tensor) -> Tensor:
        h = nn.functional.linear(x.to(self.lora_down.dtype), self.lora_down)
        return nn.functional.linear(h, self.lora_up) * self.scale


class LoraSet(nn.Module):
    """The trainable layers of one run, keyed by the target Linear's name (dots become '/' in the
    ModuleDict, which cannot hold dots)."""

    def __init__(self, layers: dict[str, nn.Linear], rank: int, alpha: float, seed: int):
        super().__init__()
        if rank < 1:
            raise NewbieError(f"--rank must be >= 1, got {rank}")
        self.rank, self.alpha = rank, alpha
        gen = torch.Generator().manual_seed(seed)
        self.layers = nn.ModuleDict(
            {
                name.replace(".", "/"): LoraLayer(m.in_features, m.out_features, rank, alpha, gen)
                for name, m in sorted(layers.items())
            }
        )
        self._handles: list = []

    def named_layers(self):
        for key, layer in self.layers.items():
            yield key.replace("/", "."), layer

    def attach(self, dit: nn.Module) -> None:
        modules = dict(dit.named_modules())
        self.detach()
        for name, layer in self.named_layers():
            self._handles.append(modules[name].register_forward_hook(_adder(layer)))

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def _adder(layer: LoraLayer):
    def hook(module, args, out):
        return out + layer(args[0]).to(out.dtype)

    return hook

"""Quantized DiT / Gemma linears through torchao (optional extra), from the bf16 checkpoint at load time.

Modes: "int8" and "fp8" = weight-only (memory: ~half of bf16, compute still bf16);
"fp8-dynamic" = fp8 activations and weights with per-row scales (speed, needs compute capability >= 8.9).
Only the repeated blocks are quantized; embedders, norms and the final layer stay in bf16.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from newbie.errors import NewbieError

MODES = ("int8", "fp8", "fp8-dynamic")
_BLOCK_PREFIXES = ("layers.", "noise_refiner.", "context_refiner.")


def _torchao():
    logging.getLogger("torchao").setLevel(logging.ERROR)  # CUDA-only kernel libraries fail to load on CPU
    try:
        from torchao.quantization import (
            Float8DynamicActivationFloat8WeightConfig,
            Float8WeightOnlyConfig,
            Int8WeightOnlyConfig,
            PerRow,
            quantize_,
        )
    except ImportError:
        raise NewbieError("quantized weights need torchao: pip install 'torchao==0.18.0'") from None
    return (
        quantize_,
        Int8WeightOnlyConfig,
        Float8WeightOnlyConfig,
        Float8DynamicActivationFloat8WeightConfig,
        PerRow,
    )


def _config(mode: str, device: torch.device):
    quantize_, int8, fp8w, fp8dq, per_row = _torchao()
    if mode == "int8":
        return quantize_, int8()
    if mode == "fp8":
        return quantize_, fp8w()
    if mode == "fp8-dynamic":
        if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 9):
            raise NewbieError(
                "fp8-dynamic compute needs a CUDA GPU with compute capability >= 8.9 (Ada/Hopper)"
            )
        return quantize_, fp8dq(granularity=per_row())
    raise NewbieError(f"unknown quantization '{mode}' (choose from {', '.join(MODES)})")


def quantize_blocks(model: nn.Module, mode: str, prefixes: tuple[str, ...] = _BLOCK_PREFIXES) -> int:
    """Quantize the Linear layers under `prefixes` in place; returns how many were quantized."""
    device = next(model.parameters()).device
    quantize_, cfg = _config(mode, device)
    chosen = []

    def pick(module: nn.Module, fqn: str) -> bool:
        ok = (
            isinstance(module, nn.Linear)
            and fqn.startswith(prefixes)
            and module.in_features % 16 == 0
            and module.out_features % 16 == 0
        )
        if ok:
            chosen.append(fqn)
        return ok

    quantize_(model, cfg, filter_fn=pick)
    return len(chosen)


def quantize_dit(dit: nn.Module, mode: str) -> int:
    return quantize_blocks(dit, mode)


def quantize_gemma(gemma: nn.Module, mode: str) -> int:
    return quantize_blocks(gemma, mode, ("layers.",))

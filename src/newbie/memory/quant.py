"""Quantized DiT / Gemma linears, from the bf16 checkpoint at load time.

Modes: "int8" and "fp8" = weight-only through torchao (optional extra; memory: ~half of bf16, compute still
bf16). "fp8-dynamic" = fp8 activations and weights with per-row scales, newbie's own `Float8Linear`
(newbie.precision.fp8, no torchao): `torch._scaled_mm` on a CUDA GPU with compute capability >= 8.9, an
exact float32 emulation of the same quantized product on the CPU (correct, slower than bf16: for tests).
Only the repeated blocks are quantized; embedders, norms and the final layer stay in bf16.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from newbie.errors import NewbieError
from newbie.precision.fp8 import quantize_linears

MODES = ("int8", "fp8", "fp8-dynamic")
_BLOCK_PREFIXES = ("layers.", "noise_refiner.", "context_refiner.")


def _torchao():
    logging.getLogger("torchao").setLevel(logging.ERROR)  # CUDA-only kernel libraries fail to load on CPU
    pytree = logging.getLogger("torch.utils._pytree")  # torchao registers Enum constants, deprecated in torch
    level = pytree.level
    pytree.setLevel(logging.ERROR)
    try:
        from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig, quantize_
    except ImportError:
        raise NewbieError("quantized weights need torchao: pip install 'torchao==0.18.0'") from None
    finally:
        pytree.setLevel(level)
    return quantize_, Int8WeightOnlyConfig, Float8WeightOnlyConfig


def _config(mode: str):
    quantize_, int8, fp8w = _torchao()
    return quantize_, int8() if mode == "int8" else fp8w()


def quantize_blocks(model: nn.Module, mode: str, prefixes: tuple[str, ...] = _BLOCK_PREFIXES) -> int:
    """Quantize the Linear layers under `prefixes` in place; returns how many were quantized."""
    if mode not in MODES:
        raise NewbieError(f"unknown quantization '{mode}' (choose from {', '.join(MODES)})")
    if mode == "fp8-dynamic":
        device = next(model.parameters()).device
        # an older GPU would run the float32 emulation: correct but slower than bf16, so refuse there
        if device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 9):
            raise NewbieError(
                "fp8-dynamic compute needs a CUDA GPU with compute capability >= 8.9 (Ada/Hopper)"
            )
        # the adaLN projections see one row per sample: no fp8 speed to gain, only error in every
        # scale and gate of the block
        return quantize_linears(model, prefixes, exclude=("adaLN_modulation",))
    quantize_, cfg = _config(mode)
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

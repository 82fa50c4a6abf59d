"""The fp16 guard: find NaN/Inf where they appear and recover instead of saving a black image.

During sampling every DiT output is checked (one host sync per call; on only for fp16, where overflow is
known in this model family). On a non-finite output the run restarts, first with the activations of the
attention and FFN outputs clamped to the fp16 range (ComfyUI does the same for Lumina 2), then with the DiT
in bf16 (fp32 on a CPU). A non-finite text embedding re-runs the encoders, a non-finite decode re-runs the VAE,
in the safe dtype. Every intervention is reported in the recipe's warnings.
"""

from __future__ import annotations

import torch

FP16_MAX = 65504.0


class NonFinite(Exception):
    def __init__(self, where: str):
        super().__init__(f"NaN/Inf in {where}")
        self.where = where


def all_finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def checked(model, where: str):
    """Wrap model(x, sigma) so a non-finite output raises NonFinite."""

    def model_checked(x, sigma):
        out = model(x, sigma)
        if not all_finite(out):
            raise NonFinite(f"{where} at sigma {sigma:.3f}")
        return out

    return model_checked


def safe_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def set_clamp(dit, on: bool) -> None:
    for block in dit.blocks():
        block.clamp_fp16 = on

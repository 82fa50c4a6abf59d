"""The weight change of one adapted Linear layer: LoRA (B·A) or LoKr (kron(w1, w2)), as a dense ΔW for fusing
or applied to the layer input directly (unfused), which never builds the full matrix."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F


@dataclass
class LoraDelta:
    """ΔW = scale · up @ down; PEFT's lora_B [out, r] and lora_A [r, in] (kohya: lora_up / lora_down)."""

    down: Tensor  # [r, in]
    up: Tensor  # [out, r]
    scale: float  # alpha / r (alpha / sqrt(r) with rsLoRA)

    @property
    def shape(self) -> tuple[int, int]:
        return self.up.shape[0], self.down.shape[1]

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.down.dtype

    def weight(self) -> Tensor:
        return (self.up.float() @ self.down.float()) * self.scale

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(F.linear(x, self.down), self.up) * self.scale

    def to(self, device, dtype) -> LoraDelta:
        return LoraDelta(self.down.to(device, dtype), self.up.to(device, dtype), self.scale)


@dataclass
class LokrDelta:
    """ΔW = scale · kron(w1, w2), w1 [a, b], w2 [c, d], so ΔW is [a·c, b·d] (LyCORIS LoKr).

    w2 may be factorised as w2_a [c, r] @ w2_b [r, d]; a factorised w1 is multiplied out when loading
    (it is the small factor)."""

    w1: Tensor  # [a, b]
    w2: Tensor | None  # [c, d], or None when factorised
    w2_a: Tensor | None
    w2_b: Tensor | None
    scale: float  # alpha / rank for factorised files, 1 for full factors (LyCORIS)

    @property
    def shape(self) -> tuple[int, int]:
        c, d = self.w2.shape if self.w2 is not None else (self.w2_a.shape[0], self.w2_b.shape[1])
        return self.w1.shape[0] * c, self.w1.shape[1] * d

    @property
    def rank(self) -> int | None:
        return None if self.w2 is not None else self.w2_b.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.w1.dtype

    def full_w2(self) -> Tensor:
        return self.w2 if self.w2 is not None else self.w2_a @ self.w2_b

    def weight(self) -> Tensor:
        return torch.kron(self.w1.float(), self.full_w2().float()) * self.scale

    def forward(self, x: Tensor) -> Tensor:
        # kron(w1, w2) @ x == w1 @ X @ w2^T, X = x viewed as [b, d]: two small matmuls, no [out, in] matrix
        b = self.w1.shape[1]
        h = x.unflatten(-1, (b, -1))  # (..., b, d)
        if self.w2 is not None:
            h = F.linear(h, self.w2)  # (..., b, c)
        else:
            h = F.linear(F.linear(h, self.w2_b), self.w2_a)
        h = torch.matmul(self.w1, h)  # (..., a, c)
        return h.flatten(-2) * self.scale

    def to(self, device, dtype) -> LokrDelta:
        w2, w2_a, w2_b = (None if t is None else t.to(device, dtype) for t in (self.w2, self.w2_a, self.w2_b))
        return LokrDelta(self.w1.to(device, dtype), w2, w2_a, w2_b, self.scale)


Delta = LoraDelta | LokrDelta

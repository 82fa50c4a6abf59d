"""fp8 linears: e4m3 weights with one scale per output row, activations quantized per token at run time.

`Float8Linear` replaces an `nn.Linear`. The weight is stored once as float8_e4m3fn (out, in) with a float32
scale per output row (amax / 448); each call quantizes its input the same way per row of the flattened
(tokens, in) matrix and multiplies the two in fp8 with `torch._scaled_mm` and row-wise scales (CUDA,
compute capability >= 8.9). Elsewhere (the CPU, older GPUs) the same quantized operands are dequantized to
float32 and multiplied exactly, so CPU tests check the very numbers the GPU multiplies.

The activation quantization is plain torch ops (amax, divide, clamp, cast) so that inductor fuses it into
the kernel that produced the input (the norm and modulation before each GEMM) with no graph break.
`_scaled_mm` facts used here (torch 2.11-2.13, aten/src/ATen/native/cuda/ScaledBlas.cpp): both operands
fp8, the first row-major (M, K), the second column-major (K, N) (the transpose of a row-major (N, K)
weight); K and N multiples of 16; row-wise scales float32 of shape (M, 1) and (1, N), contiguous; bf16
output is the one every row-wise kernel accepts (the CUTLASS fallback took only bf16 before torch 2.10),
so other activation dtypes get a bf16 product cast back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0  # torch.finfo(torch.float8_e4m3fn).max; larger values would cast to NaN, not saturate
AMAX_FLOOR = 1e-12  # an all-zero row gets a tiny scale instead of a division by zero (and quantizes to 0)


def quantize_rows(t: Tensor) -> tuple[Tensor, Tensor]:
    """(..., K) -> (e4m3 values (..., K), float32 scales (..., 1)) with t ≈ values * scales, per row."""
    t32 = t.float()
    scale = t32.abs().amax(dim=-1, keepdim=True).clamp(min=AMAX_FLOOR) / E4M3_MAX
    return (t32 / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), scale


def dequantize_rows(q: Tensor, scale: Tensor) -> Tensor:
    return q.float() * scale


def scaled_mm_rows(xq: Tensor, sx: Tensor, wq: Tensor, sw: Tensor, fast_accum: bool = False) -> Tensor:
    """(M, K) e4m3 activations with (M, 1) scales times the (N, K) e4m3 weight with (N, 1) scales -> (M, N)
    bf16 through torch._scaled_mm: the weight goes in transposed, i.e. column-major (K, N), and its scales
    as the (1, N) transpose of a contiguous (N, 1)."""
    return torch._scaled_mm(
        xq, wq.t(), scale_a=sx, scale_b=sw.t(), out_dtype=torch.bfloat16, use_fast_accum=fast_accum
    )


def fp8_gemm_available() -> bool:
    """Whether this process's CUDA device multiplies fp8 natively (compute capability >= 8.9: Ada, Hopper)."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9)


class Float8Linear(nn.Module):
    """y = x @ W.T + b with W and x in e4m3 and per-row scales; see the module docstring.

    `weight` (fp8) and `weight_scale` (float32) are frozen Parameters, so Module.to, the memory plans' pointer
    swaps (memory/offload.py) and their size accounting treat them like any weight. A dtype change of the
    model (Module.to(dtype), the fp16 guard's fallback) leaves both as they are and converts only the bias:
    the output always follows the activation dtype."""

    def __init__(
        self,
        weight: Tensor,
        weight_scale: Tensor,
        bias: Tensor | None = None,
        native: bool | None = None,
        fast_accum: bool = True,
    ):
        super().__init__()
        if weight.dtype != E4M3 or weight.ndim != 2 or weight_scale.shape != (weight.shape[0], 1):
            raise ValueError(
                f"Float8Linear needs an e4m3 (out, in) weight and (out, 1) scales, got "
                f"{weight.dtype} {tuple(weight.shape)} and {tuple(weight_scale.shape)}"
            )
        self.out_features, self.in_features = weight.shape
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.weight_scale = nn.Parameter(weight_scale.float(), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
        # decided once, outside any compiled graph: a plain bool attribute is a constant to torch.compile
        self.native = fp8_gemm_available() if native is None else native
        # Hopper's faster fp8 accumulation (what torchao's inference configs use); the emulation is exact
        self.fast_accum = fast_accum

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kw) -> Float8Linear:
        q, scale = quantize_rows(linear.weight.detach())
        return cls(q, scale, linear.bias, **kw)

    def dequantized_weight(self) -> Tensor:
        return dequantize_rows(self.weight, self.weight_scale)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        xq, sx = quantize_rows(x.reshape(-1, x.shape[-1]))
        if self.native and x.is_cuda:
            y = scaled_mm_rows(xq, sx, self.weight, self.weight_scale, self.fast_accum).to(x.dtype)
        else:
            y = F.linear(dequantize_rows(xq, sx), self.dequantized_weight()).to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*lead, self.out_features)

    def _apply(self, fn, recurse=True):
        # Module.to(dtype) / .half() would turn the fp8 weight into plain floats with no scale and round the
        # float32 scales: these two follow only the device that `fn` sends an empty probe to
        fixed = (self.weight, self.weight_scale)

        def keep_dtype(t):
            if any(t is f for f in fixed):
                return t.to(fn(torch.empty(0, dtype=t.dtype, device=t.device)).device)
            return fn(t)

        return super()._apply(keep_dtype, recurse)

    @staticmethod
    def concat_rows(parts: list[Float8Linear]) -> Float8Linear:
        """One Float8Linear computing the given ones side by side (outputs concatenated), e.g. a SwiGLU's
        w1|w3 (`FeedForward.fuse` looks for this method): per-row weight scales and per-token activation
        scales make it exactly the separate products.
        The parts' weights become views into the new one's, so values stay shared."""
        first = parts[0]
        if any(p.bias is not None for p in parts) or len({p.in_features for p in parts}) != 1:
            raise ValueError("concat_rows needs Float8Linears without bias over the same input width")
        weight = torch.cat([p.weight.detach() for p in parts])
        scale = torch.cat([p.weight_scale.detach() for p in parts])
        out = Float8Linear(weight, scale, native=first.native, fast_accum=first.fast_accum)
        start = 0
        for p in parts:
            stop = start + p.out_features
            p.weight = nn.Parameter(out.weight.data[start:stop], requires_grad=False)
            p.weight_scale = nn.Parameter(out.weight_scale.data[start:stop], requires_grad=False)
            start = stop
        return out

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, native={self.native}"
        )


concat_rows = Float8Linear.concat_rows


def plain_float_weight(m: nn.Module) -> bool:
    """The module's weight is a plain tensor of 16- or 32-bit floats: not a torchao tensor subclass (a
    quantized Linear keeps its class) and not fp8 (a Float8Linear's weight needs its separate scale)."""
    w = getattr(m, "weight", None)
    return w is not None and type(w.detach()) is Tensor and w.is_floating_point() and w.element_size() > 1


def _plain_linear(m: nn.Module) -> bool:
    return type(m) is nn.Linear and plain_float_weight(m)


def quantize_linears(model: nn.Module, prefixes: tuple[str, ...], exclude: tuple[str, ...] = (), **kw) -> int:
    """Replace, in place, every plain nn.Linear under `prefixes` whose in and out features are multiples of
    16 (the fp8 GEMM's requirement) and whose name contains none of `exclude` by a Float8Linear; returns
    how many were replaced."""
    chosen = [
        (name, m)
        for name, m in model.named_modules()
        if name.startswith(prefixes)
        and not any(e in name for e in exclude)
        and _plain_linear(m)
        and m.in_features % 16 == 0
        and m.out_features % 16 == 0
    ]
    for name, m in chosen:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, Float8Linear.from_linear(m, **kw))
    return len(chosen)


@torch.no_grad()
def relative_errors(ref: nn.Module, quant: nn.Module, tokens: int = 1024, seed: int = 0) -> dict[str, float]:
    """Per layer type (the name without the block index, e.g. "layers.attention.qkv"): the mean over blocks
    of |fp8 - reference| / |reference| (Frobenius) on random normal inputs of `tokens` rows, for every
    Float8Linear of `quant` against the same-named Linear of `ref` (the unquantized model)."""
    refs = dict(ref.named_modules())
    gens: dict[torch.device, torch.Generator] = {}  # inputs drawn where the layer lives (fast on a GPU)
    sums: dict[str, list[float]] = {}
    for name, m in quant.named_modules():
        if not isinstance(m, Float8Linear) or name not in refs:
            continue
        r = refs[name]
        dev = r.weight.device
        g = gens.setdefault(dev, torch.Generator(device=dev).manual_seed(seed))
        x = torch.randn(tokens, m.in_features, generator=g, device=dev).to(r.weight.dtype)
        want = r(x).float()
        err = ((m(x).float() - want).norm() / want.norm()).item()
        kind = ".".join(p for p in name.split(".") if not p.isdigit())
        sums.setdefault(kind, []).append(err)
    return {k: sum(v) / len(v) for k, v in sorted(sums.items())}

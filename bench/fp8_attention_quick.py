"""The fp8 attention kernel against cuDNN's bf16 attention at the DiT's shapes (24 query / 8 KV heads, head
size 96, 4,352 and 16,640 tokens), for a device call too short for `newbie bench speed`: TFLOP/s (4 N^2 D Hq
per call) of cuDNN and of the fp8 kernel on quantized operands (the quantization timed apart), and the fp8
output's relative error against fp32 attention and against cuDNN's. One JSON object on stdout.

    PYTHONPATH=src python bench/fp8_attention_quick.py
"""

import json
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.testing import do_bench

from newbie.bench.speed_sections import attention_tflops, fp8_kernel_alone, random_qkv, sdpa_bnhd
from newbie.model import flash

H, HK, D = 24, 8, 96


def main() -> int:
    out = {"device": torch.cuda.get_device_name(), "fp8_kernel": fp8_kernel_alone(H, HK, D, (4352, 16640))}
    g = torch.Generator("cuda").manual_seed(5)
    for n in (4352, 16640):
        q, k, v = random_qkv(n, g, H, HK, D)
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            ms = do_bench(lambda q=q, k=k, v=v: sdpa_bnhd(q, k, v), rep=200)
            cudnn = sdpa_bnhd(q, k, v).float()
        exact = sdpa_bnhd(*(t.float() for t in (q, k, v)))
        f8 = flash.flash96(q, k, v, True).float()
        out[str(n)] = {
            "cudnn_tflops": attention_tflops(n, ms * 1e-3, H, D),
            "fp8_rel_err_vs_fp32": float((f8 - exact).norm() / exact.norm()),
            "fp8_rel_err_vs_cudnn_bf16": float((f8 - cudnn).norm() / cudnn.norm()),
            "cudnn_rel_err_vs_fp32": float((cudnn - exact).norm() / exact.norm()),
            "fp8_nonfinite": int((~f8.isfinite()).sum()),
        }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

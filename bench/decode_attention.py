"""A Gemma decode step's attention alone, at Gemma3-4B's shapes (8 query / 4 KV heads, head size 256, bf16, one
query over a static cache of 769 slots, boolean mask): SDPA (`model.gemma.attend`'s one-query branch, what the
step ran before: cuDNN's flash kernel on an H100, 52 us a call in the compiled step's profile) against
`model.gemma.attend_one` (plain fp32 math, what it runs now) and the same math as two batched GEMMs (`mm`, the
alternative), each as eager kernels and torch.compile'd, each captured as one CUDA graph of 34 calls on 34
layers' own caches (one token's worth: no cache stays in L2).

    python bench/decode_attention.py --json "$OUT/decode-attention.json"     # one GPU, ~1 min (compiles)
    python bench/decode_attention.py --cpu                                   # checks the script: no graph

Per variant: us a call (median of 5 timings of 20 replays), us a token (x 34 layers), and the largest
difference from fp32 math on the same inputs. The byte floor is K and V read once: 2 x slots x 4 x 256 x 2 B.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from newbie.model.gemma import attend, attend_one  # noqa: E402

LAYERS, HEADS, KV_HEADS, HEAD_DIM, SCALE = 34, 8, 4, 256, 256**-0.5


def inputs(slots: int, device, dtype) -> tuple[list, torch.Tensor]:
    """One query and one cache (k, v) per layer, and the decoder's mask at the second-to-last slot."""
    g = torch.Generator(device).manual_seed(0)
    layers = [
        tuple(
            torch.randn(1, n, t, HEAD_DIM, generator=g, device=device).to(dtype)
            for n, t in ((HEADS, 1), (KV_HEADS, slots), (KV_HEADS, slots))
        )
        for _ in range(LAYERS)
    ]
    mask = (torch.arange(slots, device=device) <= slots - 2)[None, None, None]
    return layers, mask


def attend_mm(q, k, v, mask, scale):
    """The alternative to attend_one's products and sums: both products as batched GEMMs (cuBLAS, also under
    inductor), fp32 scores from upcast operands, p rounded to the input dtype for p.v as flash kernels do."""
    b, h, n, d = k.shape
    rep = q.shape[1] // h
    s = (q.reshape(b, h, rep, d).float() * scale) @ k.float().mT  # (B, KV, rep, L)
    p = torch.where(mask, s, float("-inf")).softmax(-1)
    return (p.to(v.dtype) @ v).reshape(b, h * rep, 1, d)


def variants(cpu: bool) -> dict:
    backend = "aot_eager" if cpu else "inductor"  # on the CPU the script is checked, not timed
    out = {}
    for name, fn in (("sdpa", attend), ("math", attend_one), ("mm", attend_mm)):
        out[name] = fn
        out[f"{name}_compiled"] = torch.compile(fn, backend=backend, fullgraph=True, dynamic=False)
    return out


def time_us(fn, layers, mask, cuda: bool) -> float | None:
    """us a call: a CUDA graph of every layer's call, replayed 20 times, median of 5 (on the CPU: one pass)."""

    def token():
        return [fn(q, k, v, mask, SCALE) for q, k, v in layers]

    if not cuda:
        token()
        return None
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # compiles, autotunes and warms up off the capture
            token()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        token()
    times = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(20):
            graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / (20 * len(layers)))
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slots", type=int, default=769, help="cache slots (the bench's 512 + 256 + 1)")
    ap.add_argument("--cpu", action="store_true", help="small shapes on the CPU: checks the script")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    cuda = not args.cpu
    if cuda and not torch.cuda.is_available():
        print("error: no CUDA device (use --cpu to check the script)", file=sys.stderr)
        return 2
    device, slots = ("cuda", args.slots) if cuda else ("cpu", 33)
    layers, mask = inputs(slots, device, torch.bfloat16)
    q32, k32, v32 = (t.float() for t in layers[0])
    exact = attend(q32, k32, v32, mask, SCALE)  # SDPA in fp32: independent of the math under test
    res = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "slots": slots,
        "kv_bytes_per_layer": 2 * slots * KV_HEADS * HEAD_DIM * 2,
        "variants": {},
    }
    with torch.no_grad():
        for name, fn in variants(args.cpu).items():
            q, k, v = layers[0]
            diff = (fn(q, k, v, mask, SCALE).float() - exact).abs().max().item()
            us = time_us(fn, layers, mask, cuda)
            per_token = None if us is None else us * LAYERS
            res["variants"][name] = {
                "us_per_call": us,
                "us_per_token": per_token,
                "max_abs_diff_vs_fp32": diff,
            }
            timed = "not timed" if us is None else f"{us:8.2f} us/call {per_token:9.1f} us/token"
            print(f"{name:14s} {timed}  max|diff| vs fp32 {diff:.2e}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

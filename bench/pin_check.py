"""Pinning a memory plan's weights on a GPU host: one pin_memory() per tensor (the old holders) against one
arena per holder (newbie.memory.arena: a CPU buffer registered once with cudaHostRegister), and the arena
through the caching host allocator (torch.empty(pin_memory=True)) for comparison. ~7 GB of bf16 tensors in
the DiT's block shapes (2304 wide, 9216 FFN, 40 heads of 96 for qkv), filled with random values.

Checks that the arena's views are pinned, equal the originals, copy host-to-device at full speed, and that a
non_blocking copy from them is asynchronous (queued behind a 200 ms sleep kernel, the call returns at once;
the same copy from pageable memory, the control, waits).

Prints one JSON object and writes it to $OUT/pin-check-<device>-<date>.json (or the current folder).

    python bench/pin_check.py [--gb 7]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import sys
import time
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from newbie.memory.arena import pack  # noqa: E402

DIM, FFN, QKV = 2304, 9216, (24 + 2 * 8) * 96
BLOCK = (
    [(QKV, DIM), (DIM, DIM), (FFN, DIM), (DIM, FFN), (FFN, DIM), (4 * DIM, 256)] + [(DIM,)] * 4 + [(96,)] * 2
)


def weights(gb: float) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    per_block = sum(torch.Size(s).numel() for s in BLOCK) * 2
    out = []
    for _ in range(max(1, round(gb * 1e9 / per_block))):
        out += [torch.empty(s, dtype=torch.bfloat16).uniform_(-1, 1, generator=g) for s in BLOCK]
    return out


def host_bytes() -> dict:
    """The caching host allocator's counters (bytes it has locked, rounded; its cudaHostAlloc calls and their
    microseconds), where this torch has them."""
    try:
        stats = torch.cuda.host_memory_stats()
    except (AttributeError, RuntimeError) as e:
        return {"unavailable": str(e)}
    keep = ("allocated_bytes.current", "active_bytes.current", "num_host_alloc", "host_alloc_time.total")
    return {k: stats[k] for k in keep if k in stats}  # cumulative since the process started


def h2d_gbps(tensors: list[torch.Tensor], dev: torch.device) -> float:
    nbytes = sum(t.numel() * t.element_size() for t in tensors)
    torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    gpu = [t.to(dev, non_blocking=True) for t in tensors]
    torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - t0
    del gpu
    torch.cuda.empty_cache()
    return round(nbytes / seconds / 1e9, 2)


def async_check(t: torch.Tensor, dev: torch.device) -> dict:
    """Host seconds of a non_blocking copy queued behind a ~200 ms kernel: ~0 if asynchronous."""
    stream = torch.cuda.Stream(dev)
    torch.cuda.synchronize(dev)
    with torch.cuda.stream(stream):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.cuda._sleep(int(2e8))  # cycles: ~0.1-0.2 s at H100 clocks
        end.record()
        t0 = time.perf_counter()
        gpu = t.to(dev, non_blocking=True)
        call = time.perf_counter() - t0
        done_at_return = end.query()
    torch.cuda.synchronize(dev)
    return {
        "call_s": round(call, 4),
        "sleep_s": round(start.elapsed_time(end) / 1e3, 4),
        "sleep_done_when_call_returned": done_at_return,
        "equal": bool(torch.equal(gpu.cpu(), t)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=7.0)
    args = ap.parse_args()
    dev = torch.device("cuda")
    torch.cuda.init()
    t0 = time.perf_counter()
    ts = weights(args.gb)
    nbytes = sum(t.numel() * t.element_size() for t in ts)
    r = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "tensors": len(ts)}
    r["bytes"], r["make_s"] = nbytes, round(time.perf_counter() - t0, 2)

    t0 = time.perf_counter()
    pinned = [t.pin_memory() for t in ts]
    r["per_tensor"] = {"pin_s": round(time.perf_counter() - t0, 2), "host_allocator": host_bytes()}
    r["per_tensor"]["h2d_gbps"] = h2d_gbps(pinned, dev)
    t0 = time.perf_counter()
    del pinned
    gc.collect()
    torch._C._host_emptyCache()  # give the cached pinned blocks back, or the next section reuses them
    r["per_tensor"]["free_s"] = round(time.perf_counter() - t0, 2)

    t0 = time.perf_counter()
    buf = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    alloc = time.perf_counter() - t0
    off = 0
    for t in ts:
        n = t.numel() * t.element_size()
        buf[off : off + n].copy_(t.view(-1).view(torch.uint8))
        off += n
    r["caching_allocator_arena"] = {
        "alloc_s": round(alloc, 2),
        "alloc_and_copy_s": round(time.perf_counter() - t0, 2),
        "host_allocator": host_bytes(),
    }
    del buf
    torch._C._host_emptyCache()

    t0 = time.perf_counter()
    unpinned = pack(ts, torch.device("cpu"))  # the same packing without the lock: what registering adds
    copy_only = time.perf_counter() - t0
    del unpinned
    t0 = time.perf_counter()
    arena = pack(ts, dev)
    r["arena"] = {"pin_s": round(time.perf_counter() - t0, 2), "copy_only_s": round(copy_only, 2)}
    r["arena"]["host_allocator"] = host_bytes()  # unchanged: the arena bypasses the caching allocator
    big = max(range(len(ts)), key=lambda i: ts[i].numel())
    r["arena"].update(
        all_pinned=all(a.is_pinned() for a in arena),
        one_storage=len({a.untyped_storage().data_ptr() for a in arena}) == 1,
        equal=all(torch.equal(a, t) for a, t in zip(arena, ts)),
        h2d_gbps=h2d_gbps(arena, dev),
        non_blocking=async_check(arena[big], dev),
        pageable_control=async_check(ts[big], dev),
    )
    t0 = time.perf_counter()
    del arena
    gc.collect()
    r["arena"]["free_s"] = round(time.perf_counter() - t0, 2)

    text = json.dumps(r, indent=1)
    print(text)
    card = re.search(r"[A-Z]\d{2,3}", torch.cuda.get_device_name())
    name = f"pin-check-{card.group(0).lower() if card else 'gpu'}-{date.today()}.json"
    (Path(os.environ.get("OUT", ".")) / name).write_text(text + "\n")


if __name__ == "__main__":
    main()

"""Many host tensors packed into one buffer, page-locked once: the CPU side of a memory plan's holders.

`t.pin_memory()` per tensor costs one cudaHostAlloc per weight (~1,500 of them for the full model) and rounds
each up to a power of two (PyTorch's caching host allocator), locking up to twice the bytes: a plan's load ran
5x the plain load (H100, 2026-12-07). Here each holder's tensors get slots in one ordinary CPU buffer, are
copied in, and the buffer is registered with cudaHostRegister once, at its exact size.
"""

from __future__ import annotations

import contextlib
import weakref

import torch

ALIGN = 512  # bytes between slots: every dtype's alignment, and what CUDA copies like to start on


def _span(t: torch.Tensor) -> int:
    """Bytes the tensor's strided layout covers (its slot keeps the strides, as pin_memory() does)."""
    if t.numel() == 0:
        return 0
    return (1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride()))) * t.element_size()


def layout(tensors: list[torch.Tensor]) -> tuple[list[int], int]:
    """Each tensor's byte offset in the buffer, and the buffer's size."""
    offsets, end = [], 0
    for t in tensors:
        offsets.append(end)
        end += -(-_span(t) // ALIGN) * ALIGN
    return offsets, end


def pack(tensors: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """CPU copies of `tensors` (same values, dtype, shape and strides) that share one buffer, page-locked when
    `device` is a CUDA device so that `.to(device, non_blocking=True)` from them is asynchronous. The buffer
    lives as long as any of the copies (so as long as the holder that keeps them). Tensor subclasses
    (quantized weights) cannot be viewed into a byte buffer: they keep a copy of their own."""
    pin = torch.device(device).type == "cuda"
    first: dict[int, int] = {}  # a tensor listed twice (tied weights) gets one slot and one copy
    src = [first.setdefault(id(t), i) for i, t in enumerate(tensors)]
    tensors = [t.detach() for t in tensors]
    plain = [i for i, t in enumerate(tensors) if src[i] == i and type(t) is torch.Tensor]
    out = list(tensors)
    for i, t in enumerate(tensors):
        if src[i] == i and type(t) is not torch.Tensor:
            out[i] = t.to("cpu").pin_memory() if pin else t.to("cpu")
    offsets, total = layout([tensors[i] for i in plain])
    if total:
        storage = torch.empty(total, dtype=torch.uint8).untyped_storage()
        for i, off in zip(plain, offsets):
            t = tensors[i]
            view = torch.empty(0, dtype=t.dtype).set_(storage, off // t.element_size(), t.shape, t.stride())
            out[i] = view.copy_(t)
    if pin and total:
        # copied in first: the copy faults the pages in on all cores, and registering then only locks them
        _register(storage, torch.device(device))
    return [out[j] for j in src]


def _register(storage: torch.UntypedStorage, device: torch.device) -> None:
    """Page-lock `storage` in place and unlock it when it is freed.

    cudaHostRegister rather than one torch.empty(pin_memory=True): the caching host allocator would round a
    5.5 GB arena up to 8 GB of locked memory (and keep it cached after the plan is gone); registering locks
    the exact bytes and gives them back with the buffer. A storage's Python object lives as long as the
    storage itself (PyTorch keeps it alive while C++ holds a reference), so a finalizer on it runs when the
    last view is freed, as torch.distributed.checkpoint does for its staged copies."""
    ptr, size = storage.data_ptr(), storage.nbytes()
    err = _register_raw(ptr, size)
    if err != 0:
        raise RuntimeError(f"cudaHostRegister of {size / 2**30:.1f} GiB failed (cudaError {err})")
    weakref.finalize(storage, _unregister, ptr, device).atexit = False  # no CUDA calls at interpreter exit


def _register_raw(ptr: int, size: int) -> int:
    return int(torch.cuda.cudart().cudaHostRegister(ptr, size, 0))  # 0: cudaHostRegisterDefault


def _unregister(ptr: int, device: torch.device) -> None:
    # a non_blocking copy from the buffer may still be in flight: unlocking under it is undefined. A finalizer
    # has no one to report to and a library prints nothing, so a failing CUDA context is left as it is.
    with contextlib.suppress(RuntimeError):
        torch.cuda.synchronize(device)
        torch.cuda.cudart().cudaHostUnregister(ptr)

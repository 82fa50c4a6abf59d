"""Many host tensors packed into one buffer, page-locked once: the CPU side of a memory plan's holders.

`t.pin_memory()` per tensor costs one cudaHostAlloc per weight (~1,500 of them for the full model) and rounds
each up to a power of two (PyTorch's caching host allocator), locking up to twice the bytes: a plan's load ran
5x the plain load (H100, 2026-12-07). Here each holder's tensors get slots in one ordinary CPU buffer, are
copied in, and the buffer is registered with cudaHostRegister once, at its size rounded to whole pages.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import weakref

import torch

ALIGN = 512  # bytes between slots: every dtype's alignment, and what CUDA copies like to start on
PAGE = mmap.PAGESIZE


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
    device = torch.device(device)
    pin = device.type == "cuda"
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
        for i, view in zip(plain, _fill([tensors[i] for i in plain], offsets, total, pin, device)):
            out[i] = view
    return [out[j] for j in src]


def _view(storage: torch.UntypedStorage, offset: int, t: torch.Tensor) -> torch.Tensor:
    """A tensor shaped and strided like `t` at byte `offset` of `storage` (offsets are ALIGN-aligned)."""
    return torch.empty(0, dtype=t.dtype).set_(storage, offset // t.element_size(), t.shape, t.stride())


def _fill(tensors, offsets: list[int], total: int, pin: bool, device: torch.device) -> list[torch.Tensor]:
    """Copies of `tensors` at `offsets` in one new buffer, page-locked if `pin`."""
    size = -(-total // PAGE) * PAGE
    storage = _host_buffer(size).untyped_storage()
    views = [_view(storage, off, t).copy_(t) for t, off in zip(tensors, offsets)]
    # copied in first: the copies fault the pages in, and registering then only locks them
    if not pin or _register(storage, size, device):
        return views
    # cudaHostRegister refused (not every platform has it): one buffer from the caching host allocator, which
    # locks more (its size rounded up to a power of two) but works wherever pin_memory() does
    buf = _pinned_buffer(total)
    buf.copy_(torch.empty(0, dtype=torch.uint8).set_(storage, 0, (total,)))
    return [_view(buf.untyped_storage(), off, t) for t, off in zip(tensors, offsets)]


def _host_buffer(nbytes: int) -> torch.Tensor:
    """Anonymous memory on pages of its own (CUDA refuses to register a range that overlaps another), given
    back to the system when freed, and on huge pages where the kernel allows: copying 1 GB into fresh 4 KiB
    pages (torch.empty) took 0.8-2.0 s, into MADV_HUGEPAGE ones 0.31-0.33 s (fresh processes, 2-core VM,
    2026-12-07): the page faults, not the copy, were the cost."""
    m = mmap.mmap(-1, nbytes)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        with contextlib.suppress(OSError):  # a kernel without transparent huge pages
            m.madvise(mmap.MADV_HUGEPAGE)
    return torch.frombuffer(m, dtype=torch.uint8)  # the storage holds `m` until the last view is freed


def _pinned_buffer(nbytes: int) -> torch.Tensor:
    return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)


def _register(storage: torch.UntypedStorage, size: int, device: torch.device) -> bool:
    """Page-lock the first `size` bytes of `storage` in place, and unlock them when the storage is freed.
    False if CUDA refuses.

    cudaHostRegister rather than one torch.empty(pin_memory=True): the caching host allocator would round a
    5.5 GB arena up to 8 GB of locked memory (and keep it cached after the plan is gone); registering locks
    the bytes used and gives them back with the buffer. A storage's Python object lives as long as the
    storage itself (PyTorch keeps it alive while C++ holds a reference), so a finalizer on it runs when the
    last view is freed, as torch.distributed.checkpoint does for its staged copies."""
    ptr = storage.data_ptr()
    if _register_raw(ptr, size) != 0:
        _clear_cuda_error()
        return False
    weakref.finalize(storage, _unregister, ptr, device).atexit = False  # no CUDA calls at interpreter exit
    return True


def _register_raw(ptr: int, size: int) -> int:
    return int(torch.cuda.cudart().cudaHostRegister(ptr, size, 0))  # 0: cudaHostRegisterDefault


def _clear_cuda_error() -> None:
    """A refused call stays the CUDA runtime's "last error", which PyTorch's next kernel-launch check would
    raise as its own: read it off (torch.cuda.cudart() has no cudaGetLastError). Best effort: the runtime is
    found by its soname, so a torch with its own static copy keeps the error."""
    major = (torch.version.cuda or "").split(".")[0]
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(f"libcudart.so.{major}").cudaGetLastError()


def _unregister(ptr: int, device: torch.device) -> None:
    # a non_blocking copy from the buffer may still be in flight: unlocking under it is undefined. A finalizer
    # has no one to report to and a library prints nothing, so a failing CUDA context is left as it is.
    with contextlib.suppress(RuntimeError):
        torch.cuda.synchronize(device)
        torch.cuda.cudart().cudaHostUnregister(ptr)

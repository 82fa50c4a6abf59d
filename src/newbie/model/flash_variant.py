"""Which of the bf16 attention kernel's two variants runs: "pointer" (model/flash_triton.py, every tile
through pointer arithmetic, any strides) or "tma" (model/flash_tma.py, tiles through Hopper's tensor-memory
accelerator). The choice is measured once per shape and remembered; what the CPU can check of it lives here
(the alignment TMA needs, the choice with any timer), without importing Triton.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

VARIANTS = ("pointer", "tma")

# (n_q, n_kv, heads, kv_heads, dtype, device) -> the variant timed faster there, and the one that last ran
_CHOSEN: dict[tuple, str] = {}
_RAN: dict[tuple, str] = {}
_FAILED: dict[tuple, str] = {}  # (key, variant) -> the error it raised when timed


def shape_key(q: Tensor, k: Tensor) -> tuple:
    """q (B, N, Hq, D), k (B, M, Hkv, D) -> the key the choice is remembered under (not the batch: the
    kernels' tiles do not depend on it)."""
    return (q.shape[1], k.shape[1], q.shape[2], k.shape[2], q.dtype, q.device)


def ran(q: Tensor, k: Tensor) -> str | None:
    """The variant that last ran for inputs of this shape (None: none ran yet)."""
    return _RAN.get(shape_key(q, k))


def tma_strides(t: Tensor) -> tuple[int, int]:
    """The (image, row) strides, in elements, of t (B, N, H, D) seen as (B, N, H*D). A dimension of size 1 is
    never stepped over, so its stride may be anything in a view: it is given the packed value."""
    B, N, H, D = t.shape
    row = t.stride(1) if N > 1 else H * D
    return (t.stride(0) if B > 1 else N * row), row


def tma_aligned(*tensors: Tensor) -> bool:
    """Whether each (B, N, H, D) tensor can be read as a (B, N, H*D) tensor descriptor: heads packed within a
    row, last dim contiguous, base address and strides multiples of 16 bytes (what TMA demands), no stride 0
    (an expanded view: the pointer kernel reads those)."""
    for t in tensors:
        B, N, H, D = t.shape
        if t.stride(3) != 1 or (H > 1 and t.stride(2) != D) or t.data_ptr() % 16:
            return False
        strides = tma_strides(t)
        if min(strides) <= 0 or any(s * t.element_size() % 16 for s in (*strides, D)):
            return False
    return True


def cuda_ms(fn: Callable[[], object], reps: int = 5) -> float:
    """Mean milliseconds of fn over `reps` calls, CUDA events, after one call (its autotune and compile)."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / reps


def choose(key: tuple, runs: dict[str, Callable[[], Tensor]], timer=None) -> str:
    """The variant to run for `key`: the one remembered, else each of `runs` timed (timer(fn) -> ms, default
    `cuda_ms`) and the faster remembered. One that fails (a Triton that cannot build it for this GPU) is not
    chosen, `failed` keeps its error; if all fail, the first error is raised."""
    if _CHOSEN.get(key) not in runs:
        times, errors = {}, {}
        for name, fn in runs.items():
            try:
                times[name] = (timer or cuda_ms)(fn)
            except Exception as e:  # noqa: BLE001 - the other variant runs instead
                errors[name] = e
        if not times:
            raise next(iter(errors.values()))
        _FAILED.update({(key, name): f"{type(e).__name__}: {e}"[:300] for name, e in errors.items()})
        _CHOSEN[key] = min(times, key=times.get)
    return _CHOSEN[key]


def failed(q: Tensor, k: Tensor) -> dict[str, str]:
    """The variants that failed when timed for this shape, with their errors."""
    key = shape_key(q, k)
    return {name: err for (k_, name), err in _FAILED.items() if k_ == key}


def select(
    requested: str, key: tuple, tma_possible: bool, runs: dict[str, Callable[[], Tensor]], timer=None
) -> str:
    """The variant that runs: `requested` ("pointer", "tma" or "auto"), "pointer" where TMA is not possible
    (no TensorDescriptor, a GPU before sm90, unaligned inputs) or while a CUDA graph is captured (no timing
    then), else for "auto" the measured choice. Records it for `ran`."""
    if requested not in (*VARIANTS, "auto"):
        raise ValueError(f"attention variant must be one of pointer, tma, auto; got {requested!r}")
    if requested == "pointer" or not tma_possible:
        name = "pointer"
    elif requested == "tma":
        name = "tma"
    elif key not in _CHOSEN and torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
        name = "pointer"
    else:
        name = choose(key, runs, timer)
    _RAN[key] = name
    return name

"""User-facing errors. A NewbieError is bad input explained in one line (the CLI exits 2). Any other failure
inside a generation goes through describe(): one line that says what failed and what to do (exit 1); the
traceback is shown only with `--debug` or NEWBIE_DEBUG=1."""

from __future__ import annotations

import os
import re
import sys
from contextlib import contextmanager

BAD_INPUT, FAILED, INTERRUPTED = 2, 1, 130  # exit codes

# The messages torch gives when two tensors of one op sit on different devices or hold different dtypes:
# never the user's fault (the engine places every tensor), so they are reported as an internal error.
_MISMATCH = re.compile(
    r"Expected all tensors to be on the same device|is not on the expected device|"
    r"Input type \(.*\) and (weight|bias) type \(.*\) should be the same|"
    r"expected m1 and m2 to have the same dtype|expected scalar type \w+ but found \w+|"
    r"must have the same dtype|Expected .* to have the same dtype"
)
_RAM_OOM = re.compile(r"DefaultCPUAllocator: can't allocate memory|MPS backend out of memory")


class NewbieError(Exception):
    """A problem with the user's input, files or environment, explained in one line."""


class CheckpointError(NewbieError):
    """A model folder or weights file that is missing, damaged or does not match the architecture."""


def debug_enabled(flag: bool = False) -> bool:
    """--debug, or NEWBIE_DEBUG set to anything but empty/0: show tracebacks."""
    return flag or os.environ.get("NEWBIE_DEBUG", "") not in ("", "0")


@contextmanager
def failure_context(size: tuple[int, int] | None = None, plan: str | None = None):
    """Attach what was being made (size=(width, height), plan=name) to an exception leaving the block, so
    describe() can say where memory ran out. The innermost context wins."""
    try:
        yield
    except BaseException as e:
        if getattr(e, "newbie_context", None) is None:
            try:
                e.newbie_context = {"size": size, "plan": plan}
            except AttributeError:  # an exception type without a __dict__: describe() does without
                pass
        raise


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:300] if lines else ""


def _is_gpu_oom(e: BaseException | None) -> bool:
    torch = sys.modules.get("torch")  # not imported: the error cannot be torch's
    return torch is not None and isinstance(e, torch.OutOfMemoryError)


def _is_ram_oom(e: BaseException | None) -> bool:
    return isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and bool(_RAM_OOM.search(str(e))))


def _vram_hint() -> str:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return "--vram GiB"
    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / 2**30
    return f"--vram {max(1, int(total // 2))}"  # half the card: the planner then keeps less resident


def _where(e: BaseException) -> str:
    ctx = getattr(e, "newbie_context", None) or {}
    size, plan = ctx.get("size"), ctx.get("plan")
    where = f" at {size[0]}x{size[1]}" if size and all(size) else ""
    return where + (f" with plan '{plan}'" if plan else "")


def describe(exc: BaseException) -> tuple[str, int]:
    """(one-line message, exit code) for an error that ended a generation: 2 for bad input (NewbieError),
    1 for a runtime failure, 130 for Ctrl-C. The message says what failed and what to do about it."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", INTERRUPTED
    if isinstance(exc, NewbieError):
        # the engine's own "still out of memory after stepping down" is a runtime failure, not bad input
        caused_by_oom = _is_gpu_oom(exc.__cause__) or _is_gpu_oom(exc.__context__)
        return str(exc), FAILED if caused_by_oom else BAD_INPUT
    if _is_gpu_oom(exc):
        return (
            f"out of GPU memory{_where(exc)}: try {_vram_hint()} (a smaller budget picks a plan that keeps "
            "less on the GPU), a smaller --size or --batch 1",
            FAILED,
        )
    if _is_ram_oom(exc):
        return (
            f"out of RAM{_where(exc)}: try a smaller --size, --batch 1, or close other programs",
            FAILED,
        )
    if isinstance(exc, RuntimeError) and _MISMATCH.search(str(exc)):
        return (
            f"internal device/dtype mismatch ({_first_line(exc)}); this is a bug in newbie, please report it "
            "with the output of --debug (or NEWBIE_DEBUG=1)",
            FAILED,
        )
    what = type(exc).__name__
    detail = _first_line(exc)
    return (
        f"generation failed: {what}{': ' + detail if detail else ''} "
        "(run again with --debug or NEWBIE_DEBUG=1 for the traceback, and please report it)",
        FAILED,
    )

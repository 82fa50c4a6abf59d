"""Look inside the network while it runs: forward hooks that record, per module and per chosen sampler step,
the output's shape and value statistics (min, max, absmax, RMS, share beyond the fp16 range, NaN/Inf counts).

Attention logits are never materialised by SDPA, so a hook on each `Attention` recomputes q.k^T/sqrt(d) from
the module's own input (qkv projection, q/k norms, RoPE) and records their statistics as `<name>.logits`.
That costs one extra qkv projection and one extra QK^T product per attention call (in query chunks of at most
CHUNK_ELEMENTS fp32 values, so memory stays bounded); pass logits=False to skip it.

Statistics are taken over finite values; NaN and Inf are counted apart. Values are read as fp32, so an fp16
overflow already shows as Inf. Hooks only read: the generation is bit-for-bit the same with and without them,
and every hook is removed when the `tracing` block ends.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

FP16_MAX = 65504.0  # largest finite float16
CHUNK_ELEMENTS = 64 * 2**20  # 256 MB of fp32 logits per chunk
TEXT_STEP = 0  # text encoders run once per generation, before step 1


@dataclass
class LayerStats:
    step: int
    name: str
    kind: str  # "output" or "logits"
    order: int  # first-call order within the trace: execution order of the network
    run: int = 1  # sampling pass: > 1 after the fp16 guard restarted sampling (or a hires pass)
    dtype: str = ""
    shapes: list[str] = field(default_factory=list)
    calls: int = 0
    count: int = 0  # elements seen
    finite: int = 0
    min: float = math.inf
    max: float = -math.inf
    absmax: float = 0.0
    sumsq: float = 0.0  # over finite values
    over_fp16: int = 0  # |x| > 65504, Inf included
    nan: int = 0
    inf: int = 0

    @property
    def rms(self) -> float | None:
        return math.sqrt(self.sumsq / self.finite) if self.finite else None

    @property
    def frac_over_fp16(self) -> float:
        return self.over_fp16 / self.count if self.count else 0.0

    def merge(self, s: list[float]) -> None:
        count, finite, mn, mx, absmax, sumsq, over, nan = s
        self.count += int(count)
        self.finite += int(finite)
        self.min, self.max = min(self.min, mn), max(self.max, mx)
        self.absmax = max(self.absmax, absmax)
        self.sumsq += sumsq
        self.over_fp16 += int(over)
        self.nan += int(nan)
        self.inf = self.count - self.finite - self.nan

    def as_row(self) -> dict:
        finite = self.finite > 0
        return {
            "pass": self.run,
            "step": self.step,
            "module": self.name,
            "kind": self.kind,
            "shape": " | ".join(self.shapes),
            "dtype": self.dtype,
            "calls": self.calls,
            "min": self.min if finite else None,
            "max": self.max if finite else None,
            "absmax": self.absmax if finite else None,
            "rms": self.rms,
            "frac_over_fp16": self.frac_over_fp16,
            "nan_count": self.nan,
            "inf_count": self.inf,
        }


def summarize(x: Tensor, valid: Tensor | None = None) -> list[float]:
    """[count, finite, min, max, absmax, sum of squares, beyond fp16, NaN] of x where valid; one sync."""
    x = x.detach().float()
    if valid is None:
        valid = torch.ones((), dtype=torch.bool, device=x.device)
    valid = valid.expand_as(x)
    finite = torch.isfinite(x) & valid
    zeros = torch.zeros_like(x)
    xf = torch.where(finite, x, zeros)
    parts = torch.stack(
        [
            valid.sum().double(),
            finite.sum().double(),
            torch.where(finite, x, math.inf).min().double(),
            torch.where(finite, x, -math.inf).max().double(),
            xf.abs().max().double(),
            xf.double().square().sum(),  # float64: squares of large fp32 values would overflow
            ((x.abs() > FP16_MAX) & valid).sum().double(),  # NaN compares False, Inf True
            (torch.isnan(x) & valid).sum().double(),
        ]
    )
    return parts.tolist()


def _tensors(output) -> Iterator[tuple[str, Tensor]]:
    """The tensors of a module output: a tensor, a tuple/list of them, or a ModelOutput-like mapping."""
    if isinstance(output, Tensor):
        yield "", output
    elif isinstance(output, (tuple, list)):
        for i, o in enumerate(output):
            if isinstance(o, Tensor):
                yield f"[{i}]", o
    elif hasattr(output, "items"):
        for k, v in output.items():
            if isinstance(v, Tensor):
                yield f".{k}", v


def attention_logit_stats(
    attn: nn.Module, x: Tensor, rope, key_mask: Tensor | None, chunk_elements: int = CHUNK_ELEMENTS
) -> list[float]:
    """Statistics of q.k^T/sqrt(d) from `Attention.heads`, as its forward forms them (masked keys left out).
    q and k come out of the model's own layers in its dtype; the product is taken in fp32, so the values are
    the exact logits: beyond 65504 they would overflow any kernel that writes them out in fp16."""
    q, k, _ = attn.heads(x, rope)
    q = q.transpose(1, 2).float()  # (B, Hq, N, D)
    k = k.transpose(1, 2).float().repeat_interleave(attn.n_heads // attn.n_kv_heads, dim=1)  # (B, Hq, N, D)
    b, h, n, d = q.shape
    valid = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, N)
    rows = max(1, chunk_elements // (b * h * n))
    total = None
    for start in range(0, n, rows):
        logits = q[:, :, start : start + rows] @ k.transpose(-1, -2) / math.sqrt(d)  # (B, Hq, rows, N)
        s = summarize(logits, valid)
        total = s if total is None else _merge_summaries(total, s)
    return total


def _merge_summaries(a: list[float], b: list[float]) -> list[float]:
    return [
        a[0] + b[0],
        a[1] + b[1],
        min(a[2], b[2]),
        max(a[3], b[3]),
        max(a[4], b[4]),
        a[5] + b[5],
        a[6] + b[6],
        a[7] + b[7],
    ]


class Tracer:
    """Collects LayerStats for the steps in `steps` (sampler steps from 1; TEXT_STEP: the text encoders)."""

    def __init__(self, steps: set[int], match: str | None = None, logits: bool = True):
        self.steps = set(steps)
        self.pattern = re.compile(match) if match else None
        self.logits = logits
        self.step = 1  # the sampler step the next DiT call belongs to
        self.run = 1  # the sampling pass (see new_pass)
        self._started = False
        self.stats: dict[tuple[int, int, str, str], LayerStats] = {}
        self._order: dict[tuple[str, str], int] = {}
        self._handles: list = []

    def wanted(self, name: str) -> bool:
        return self.pattern is None or bool(self.pattern.search(name))

    def record(
        self, run: int, step: int, name: str, kind: str, t: Tensor, summary: list[float], shape=None
    ) -> None:
        order = self._order.setdefault((name, kind), len(self._order))
        key = (run, step, name, kind)
        st = self.stats.get(key)
        if st is None:
            st = self.stats[key] = LayerStats(
                step, name, kind, order, run, dtype=str(t.dtype).removeprefix("torch.")
            )
        shape = "x".join(str(s) for s in (shape or t.shape))
        if shape not in st.shapes:
            st.shapes.append(shape)
        st.calls += 1
        st.merge(summary)

    def attach(self, model: nn.Module, prefix: str = "", fixed_step: int | None = None) -> None:
        from newbie.model.dit import Attention

        for mod_name, module in model.named_modules():
            name = ".".join(p for p in (prefix, mod_name) if p) or "dit"
            if self.wanted(name):
                self._handles.append(module.register_forward_hook(self._output_hook(name, fixed_step)))
            if self.logits and isinstance(module, Attention) and self.wanted(name + ".logits"):
                self._handles.append(
                    module.register_forward_hook(self._logit_hook(name + ".logits", fixed_step))
                )

    def new_pass(self) -> None:
        """Sampling starts (again): the fp16 guard re-runs it from step 1 after an overflow. Each pass is
        kept apart, so the overflow and the recovery are not mixed."""
        if self._started:
            self.run += 1
        self._started, self.step = True, 1

    def _active(self, fixed_step: int | None) -> tuple[int, int] | None:
        """(pass, step) of the call being hooked, or None when this step is not traced."""
        if fixed_step is not None:
            return (1, fixed_step) if fixed_step in self.steps else None
        return (self.run, self.step) if self.step in self.steps else None

    def _output_hook(self, name: str, fixed_step: int | None) -> Callable:
        def hook(module, inputs, output):
            at = self._active(fixed_step)
            if at is None:
                return None
            for suffix, t in _tensors(output):
                if t.numel():
                    self.record(*at, name + suffix, "output", t, summarize(t))
            return None  # never replace the output

        return hook

    def _logit_hook(self, name: str, fixed_step: int | None) -> Callable:
        def hook(module, inputs, output):
            at = self._active(fixed_step)
            if at is None or len(inputs) < 3:
                return None
            x, rope, key_mask = inputs[:3]
            with torch.no_grad():
                summary = attention_logit_stats(module, x, rope, key_mask)
            b, n = x.shape[:2]
            self.record(*at, name, "logits", x, summary, shape=(b, module.n_heads, n, n))
            return None

        return hook

    def progress(self, inner: Callable[[dict], None] | None = None) -> Callable[[dict], None]:
        """A progress callback that moves the step counter (the sampler reports after each step)."""

        def callback(info: dict) -> None:
            self.step = info["step"] + 1
            if inner is not None:
                inner(info)

        return callback

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def rows(self) -> list[LayerStats]:
        return sorted(self.stats.values(), key=lambda s: (s.run, s.step, s.order))


@contextmanager
def tracing(
    pipe, steps: set[int], match: str | None = None, logits: bool = True, text_encoders: bool = False
) -> Iterator[Tracer]:
    """Hooks on every DiT module (and, with text_encoders, on Gemma and Jina, recorded as step 0) for the
    duration of the block. Use `tracer.progress(...)` as the generation's progress callback."""
    tracer = Tracer(steps | ({TEXT_STEP} if text_encoders else set()), match, logits)
    own_denoise = "denoise" in vars(pipe)
    sample = pipe.denoise

    def denoise(*args, **kwargs):  # one call per sampling pass
        tracer.new_pass()
        return sample(*args, **kwargs)

    pipe.denoise = denoise
    cache = pipe.embed_cache
    if text_encoders:  # cached embeddings would skip the encoders this trace is asked to show
        pipe.embed_cache = None
    try:
        tracer.attach(pipe.dit)
        if text_encoders:
            tracer.attach(pipe.text.gemma, "gemma", fixed_step=TEXT_STEP)
            tracer.attach(pipe.text.jina, "jina", fixed_step=TEXT_STEP)
        yield tracer
    finally:
        tracer.remove()
        pipe.embed_cache = cache
        if own_denoise:
            pipe.denoise = sample
        else:
            del pipe.denoise  # back to the class's method


def trace_generation(
    pipe,
    prompt: str,
    steps_to_trace: set[int],
    *,
    match: str | None = None,
    logits: bool = True,
    text_encoders: bool = False,
    negative: str | None = None,
    progress: Callable[[dict], None] | None = None,
    **generate_kwargs,
):
    """One traced generation -> (Generation, [LayerStats] in step then execution order)."""
    req = pipe.request(prompt, negative, **generate_kwargs)
    bad = sorted(s for s in steps_to_trace if not 1 <= s <= req.steps)
    if bad:
        from newbie.errors import NewbieError

        raise NewbieError(f"steps to trace {bad} are outside 1..{req.steps}")
    with tracing(pipe, set(steps_to_trace), match, logits, text_encoders) as tracer:
        gen = pipe.run(req, progress=tracer.progress(progress))
    return gen, tracer.rows()

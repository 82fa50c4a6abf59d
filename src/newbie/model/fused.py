"""The fast paths of the DiT, switched on by `Pipeline.compile`: wrappers around the one network of dit.py.

- `enable`: one GEMM for each SwiGLU's w1|w3 (`FeedForward.fuse`) and the attention backend chosen by
  measurement (`time_backends`, `choose`; "auto" unless a named backend is clearly faster), set on the
  blocks' `Attention.backend`; a named backend falls back to the others where it does not apply;
- `compile_blocks`: regional torch.compile, one full graph per block family;
- `GraphedForward`: the whole DiT forward captured as one CUDA graph per input shape, every input
  (latent, time, caption features, pooled vector, RoPE tables) copied into static buffers;
- `compile_cache`: inductor's caches in one folder that outlives the process.
The norms, modulation, gates, residuals and RoPE are left to torch.compile, which fuses each chain into
one Triton kernel between the GEMMs (the block is written so that one graph covers it, with no breaks).
Measured effect of each: docs/benchmarks.md, "Speed II".
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import sdpa_kernel

from newbie.model import flash
from newbie.model.dit import Rope
from newbie.model.math import BACKENDS, backend_order


def time_backends(
    heads: int,
    kv_heads: int,
    head_dim: int,
    tokens: int,
    device="cuda",
    dtype=torch.bfloat16,
    names=("auto", "cudnn", "flash", "efficient", "triton"),
    reps: int = 5,
) -> dict:
    """Median milliseconds of one unmasked GQA attention call per backend on random data (or the error).
    "auto" is PyTorch's own choice; "triton" and "triton-fp8" our own kernels (model/flash.py)."""
    g = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(1, heads, tokens, head_dim, device=device, dtype=dtype, generator=g)
    k, v = (
        torch.randn(1, kv_heads, tokens, head_dim, device=device, dtype=dtype, generator=g) for _ in range(2)
    )
    # our kernels take (B, N, H, D), heads packed as the DiT gives them (which the TMA variant needs)
    ours = [t.transpose(1, 2).contiguous() for t in (q, k, v)]
    out = {}
    for name in names:
        if name in flash.BACKENDS and not flash.supported(ours[0], ours[1]):
            out[name] = "not available: needs CUDA, Triton and head size 96"
            continue
        try:
            with sdpa_kernel(list(BACKENDS.values()) if name not in BACKENDS else [BACKENDS[name]]):

                def call(name=name):
                    if name in flash.BACKENDS:
                        return flash.flash96(*ours, name == "triton-fp8")
                    return F.scaled_dot_product_attention(q, k, v, enable_gqa=heads != kv_heads)

                for _ in range(2):
                    call()
                times = []
                for _ in range(reps):
                    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    a.record()
                    call()
                    b.record()
                    b.synchronize()
                    times.append(a.elapsed_time(b))
            out[name] = sorted(times)[len(times) // 2]
        except Exception as e:  # noqa: BLE001 - this backend does not take this shape/dtype/GPU (or fails to build)
            out[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
    out["auto_is"] = auto_choice(q, k, v)
    return out


def auto_choice(q: Tensor, k: Tensor, v: Tensor) -> str:
    """The backend PyTorch's own dispatch takes for these (B, H, N, D) inputs, by our name ("?" if none)."""
    value = torch._fused_sdp_choice(q, k, v, enable_gqa=q.shape[1] != k.shape[1])
    return next((n for n, b in BACKENDS.items() if b.value == value), "?")


def choose(times: dict, margin: float = 0.03) -> str:
    """ "auto" (PyTorch's own choice, no backend context in the compiled graph) when that choice is the
    fastest backend or within `margin` of it, else the fastest by name. "auto" matters beyond speed: a named
    backend puts an sdpa_kernel context into each compiled block, and AOTAutograd then bypasses its on-disk
    cache, so a second process compiles from scratch (docs/benchmarks.md: about twice the warm compile)."""
    ok = {k: v for k, v in times.items() if isinstance(v, float)}
    if not ok:
        return "auto"
    best = min(ok, key=ok.get)
    if times.get("auto_is") == best or ("auto" in ok and ok[best] > ok["auto"] * (1 - margin)):
        return "auto"
    return best


# The candidates `pick_backend` times: PyTorch's. Our Triton kernels lost to cuDNN at both DiT shapes on an H100
# (310 vs 429 TFLOP/s at 4,352 tokens, 444 vs 483 at 16,640; 2026-12-07 evening), and timing them means building
# and autotuning their 21 configs in every cold `--compile`; they stay a named choice (attention="triton").
PICKED = ("auto", "cudnn", "flash", "efficient")


def pick_backend(dit: nn.Module, tokens: int = 4096 + 256, cache_dir: str | None = None) -> str:
    """The backend to use, measured on this GPU at this model's attention shape (default: 1024², a 256-token
    caption). cache_dir: remember the choice there (`remembered_choice`), so a later process on this machine
    skips the measurement (and building and autotuning our Triton kernel in it)."""
    cfg = dit.cfg
    p = next(dit.parameters())

    def measure() -> str:
        return choose(
            time_backends(cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, tokens, p.device, p.dtype, names=PICKED)
        )

    if cache_dir is None:
        return measure()
    key = backend_key(cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, tokens, p.device, p.dtype)
    return remembered_choice(Path(cache_dir) / "attention-backend.json", key, measure)


def backend_key(heads: int, kv_heads: int, head_dim: int, tokens: int, device, dtype) -> str:
    """What a measured choice depends on: the GPU, torch and Triton, the attention shape and dtype."""
    from importlib import metadata

    try:
        triton = metadata.version("triton")
    except metadata.PackageNotFoundError:
        triton = "none"
    device = torch.device(device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return f"{gpu}|torch {torch.__version__}|triton {triton}|{heads}/{kv_heads}x{head_dim}|{tokens}|{dtype}"


def remembered_choice(path: Path, key: str, measure) -> str:
    """The choice stored under `key` in the JSON file `path`, else measure() stored there (written whole,
    then renamed: a reader never sees half a file). An unreadable file is measured over; delete the file to
    measure again."""
    import json

    try:
        known = json.loads(path.read_text())
        known = known if isinstance(known, dict) else {}
    except (OSError, ValueError):
        known = {}
    if isinstance(known.get(key), str):
        return known[key]
    known[key] = choice = measure()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(known, indent=1) + "\n")
        tmp.replace(path)
    except OSError:  # a read-only cache folder: measured again next time, nothing else lost
        pass
    return choice


# -- switching the fast paths on --


def enable(dit: nn.Module, attention: str = "auto", w13: bool = True) -> dict:
    """Every block on the attention backend `attention`, with w1|w3 as one GEMM where the weights allow
    (w13=False: two GEMMs). Returns what was switched on."""
    backend_order(attention)  # validate the name
    fused = 0
    for block in dit.blocks():
        block.attention.backend = attention
        if w13:
            fused += block.feed_forward.fuse()
        else:
            block.feed_forward.unfuse()
    return {"attention": attention, "w13_fused_blocks": fused}


# -- regional compile --


def compile_blocks(dit: nn.Module, **compile_kwargs) -> None:
    """torch.compile each repeated block as one full graph (one compiled graph serves every layer of a kind)."""
    for block in dit.blocks():
        block.compile(fullgraph=True, **compile_kwargs)
    # with dynamo left to choose (dynamic=None), the caption's length is made generic from the first call
    if compile_kwargs.get("dynamic") is None:
        dit.length_generic = True


# -- hooks added after compiling --


def honour_hooks(dit: nn.Module) -> int:
    """Blocks holding a module with forward hooks (`newbie trace`) run their eager forward;
    the others keep their compiled one. Dynamo does not guard on hooks added after a block was compiled
    (torch._dynamo.config.skip_nnmodule_hook_guards), so a compiled block would silently skip them; turning
    those guards on recompiles every block per hook set. Hooks on a block itself (memory plans' streaming)
    run outside its compiled region and are left alone. Returns how many blocks run eager."""
    eager = 0
    for block in dit.blocks():
        hooked = any(m._forward_hooks or m._forward_pre_hooks for m in block.modules() if m is not block)
        stash = block.__dict__.get("_compiled_stash")
        if hooked and block._compiled_call_impl is not None:
            block._compiled_stash, block._compiled_call_impl = block._compiled_call_impl, None
        elif not hooked and stash is not None:
            block._compiled_call_impl = stash
            del block._compiled_stash
        eager += hooked
    return eager


# -- CUDA graphs over the static-shape forward --


class GraphedForward:
    """dit.forward as replays of captured CUDA graphs, one per input shape (LRU, `max_graphs`).

    Each call copies its inputs into the graph's static buffers and returns a copy of the static output, so
    two branches of the same shape can be replayed back to back. Falls back to the plain forward when a
    step cache is given (it syncs with the host), for masked batches, off CUDA, or while another capture runs.
    All graphs share one memory pool (they never run concurrently), so memory is that of the largest one.
    The key includes each module's hooks, the fp16-clamp flag and the blocks' adapter wrappers: a trace,
    the guard or unfused adapters changing the computation force a new capture instead of a stale replay.
    """

    def __init__(self, dit: nn.Module, max_graphs: int = 8, warmup: int = 2):
        self.dit, self.max_graphs, self.warmup = dit, max_graphs, warmup
        # what dit(...) ran before: the module forward, or a wrapper such as the sequence-parallel one
        self.previous = dit.__dict__.get("forward")
        self.forward = self.previous or type(dit).forward.__get__(dit)
        self.graphs: OrderedDict = OrderedDict()
        self.pool = None
        self.captures = self.replays = 0

    def _state(self) -> tuple:
        hooks = tuple(
            (id(m), tuple(m._forward_hooks), tuple(m._forward_pre_hooks))
            for m in self.dit.modules()
            if m._forward_hooks or m._forward_pre_hooks
        )
        first = next(self.dit.parameters())
        modules = tuple(id(m) for m in self.dit.modules())  # adapters wrap layers: new module objects
        return (
            hooks,
            modules,
            first.dtype,
            first.device,
            bool(getattr(self.dit.layers[0], "clamp_fp16", False)),
        )

    def __call__(self, x, t, cap_feats, cap_mask, pooled, rope=None, cache=None):
        if (
            cache is not None
            or rope is None
            or cap_mask is not None
            or x.device.type != "cuda"
            or torch.cuda.is_current_stream_capturing()
        ):
            return self.forward(x, t, cap_feats, cap_mask, pooled, rope, cache)
        inputs = (x, t, cap_feats, pooled, rope.cos, rope.sin)
        key = (tuple((a.shape, a.dtype) for a in inputs), self._state())
        entry = self.graphs.get(key)
        if entry is None:
            entry = self._capture(key, inputs)
        self.graphs.move_to_end(key)
        static_in, graph, out = entry
        for dst, src in zip(static_in, inputs):
            dst.copy_(src)
        graph.replay()
        self.replays += 1
        return out.clone()

    def _capture(self, key, inputs):
        static_in = tuple(a.detach().clone() for a in inputs)
        sx, st, scap, spool, scos, ssin = static_in

        def run():
            return self.forward(sx, st, scap, None, spool, Rope(scos, ssin), None)

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        # warm-up outside the capture: compile, autotune, cuDNN plans
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(self.warmup):
                run()
        torch.cuda.current_stream().wait_stream(side)
        if len(self.graphs) >= self.max_graphs:
            self.graphs.popitem(last=False)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph, pool=self.pool):
            out = run()
        self.pool = graph.pool()
        self.captures += 1
        self.graphs[key] = (static_in, graph, out)
        return self.graphs[key]


def use_cuda_graphs(dit: nn.Module, on: bool = True, max_graphs: int = 8) -> GraphedForward | None:
    """Route dit(...) through a GraphedForward (instance attribute; the class forward stays the reference)."""
    current = dit.__dict__.get("forward")
    if isinstance(current, GraphedForward):
        if current.previous is None:
            del dit.forward
        else:
            dit.forward = current.previous
    if not on:
        return None
    graphed = GraphedForward(dit, max_graphs)
    dit.forward = graphed
    return graphed


# -- the on-disk compile cache --


def compile_cache(cache_dir: str | None = None) -> str:
    """Point inductor's caches at one folder that outlives the process (cache_dir, else
    $TORCHINDUCTOR_CACHE_DIR, else ~/.cache/newbie/inductor): the FX graph cache (inductor's output), the
    AOT autograd cache, the Triton kernels and their autotuning results. Returns the folder.

    torch's mega-cache (save/load_cache_artifacts) was tried and left out: loading it in a second process
    was slow and its recorded dynamic-shape profile made most graphs miss the FX graph cache
    (docs/benchmarks.md)."""
    default = str(Path.home() / ".cache/newbie/inductor")
    folder = cache_dir or os.environ.get("TORCHINDUCTOR_CACHE_DIR") or default
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
    torch._inductor.config.fx_graph_cache = True
    torch._functorch.config.enable_autograd_cache = True
    return folder

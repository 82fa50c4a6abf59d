"""Fast paths of the DiT, switched on by `Pipeline.compile` (or `enable`); dit.py stays the reference.

Each is tested against the eager modules on CPU (tests/model/test_fused.py):
- one GEMM for the SwiGLU's w1|w3: the two weights become views into one (2·hidden, dim) tensor at
  load/compile time, so the state dict keeps its official `w1`/`w3` keys and in-place LoRA fusing
  updates both views;
- the attention backend chosen by measurement (`time_backends`, `choose`): on an H200 at head size 96
  PyTorch's own choice is already cuDNN, so "auto" stays; a named backend falls back to the others
  where it does not apply (CPU, masks);
- `GraphedForward`: the whole DiT forward captured as one CUDA graph per input shape, every input
  (latent, time, caption features, pooled vector, RoPE tables) copied into static buffers;
- `compile_cache`: inductor's caches in one folder that outlives the process.
The norms, modulation, gates, residuals and RoPE are left to torch.compile, which fuses each chain into
one Triton kernel between the GEMMs (the block is written so that one graph covers it, with no breaks).
Measured effect of each: docs/benchmarks.md, "Speed II".
"""

from __future__ import annotations

import os
import types
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from newbie.errors import NewbieError
from newbie.model.dit import per_token
from newbie.model.math import apply_rope, segmented
from newbie.model.math import attention as masked_attention
from newbie.precision.fp8 import Float8Linear, concat_rows

BACKENDS = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}


def backend_order(name: str) -> list[SDPBackend]:
    """The named backend first, then the others (so CPU and unsupported shapes still run)."""
    if name == "auto":
        return []
    if name not in BACKENDS:
        raise NewbieError(f"unknown attention backend {name!r}; choose from auto, {', '.join(BACKENDS)}")
    first = BACKENDS[name]
    return [first] + [b for b in BACKENDS.values() if b != first]


def time_backends(
    heads: int,
    kv_heads: int,
    head_dim: int,
    tokens: int,
    device="cuda",
    dtype=torch.bfloat16,
    names=("auto", "cudnn", "flash", "efficient"),
    reps: int = 5,
) -> dict:
    """Median milliseconds of one unmasked GQA attention call per backend on random data (or the error).
    "auto" is PyTorch's own choice."""
    g = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(1, heads, tokens, head_dim, device=device, dtype=dtype, generator=g)
    k, v = (
        torch.randn(1, kv_heads, tokens, head_dim, device=device, dtype=dtype, generator=g) for _ in range(2)
    )
    out = {}
    for name in names:
        try:
            with sdpa_kernel(list(BACKENDS.values()) if name == "auto" else [BACKENDS[name]]):

                def call():
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
        except RuntimeError as e:  # this backend does not take this shape/dtype/GPU
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
    cache, so a second process compiles from scratch (H200, 2026-12-01: warm compile 29 s named, 15 s auto).
    On an H200 at head size 96 PyTorch already picks cuDNN (0.41 ms; flash 0.66 ms)."""
    ok = {k: v for k, v in times.items() if isinstance(v, float)}
    if not ok:
        return "auto"
    best = min(ok, key=ok.get)
    if times.get("auto_is") == best or ("auto" in ok and ok[best] > ok["auto"] * (1 - margin)):
        return "auto"
    return best


def pick_backend(dit: nn.Module, tokens: int = 4096 + 256) -> str:
    """The backend to use, measured on this GPU at this model's attention shape (default: 1024², a 256-token
    caption)."""
    cfg = dit.cfg
    p = next(dit.parameters())
    return choose(time_backends(cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, tokens, p.device, p.dtype))


# -- one GEMM for w1|w3 --


def fuse_w13(ff: nn.Module) -> bool:
    """Make ff.w1.weight and ff.w3.weight views into one tensor `ff.w13` (not registered: the state dict keeps
    the official keys). Plain float weights, or two fp8 Float8Linears: then `ff.w13` is one Float8Linear over
    both (per-row weight scales and per-token activation scales make it exactly the two products). Other
    quantized weights keep two GEMMs. Returns whether it fused."""
    if getattr(ff, "w13", None) is not None:
        return True
    if isinstance(ff.w1, Float8Linear) and isinstance(ff.w3, Float8Linear):
        if ff.w1.bias is not None or ff.w3.bias is not None or ff.w1.weight.device != ff.w3.weight.device:
            return False
        object.__setattr__(ff, "w13", concat_rows([ff.w1, ff.w3]))  # unregistered, like the float w13
        return True
    w1, w3 = ff.w1.weight, ff.w3.weight
    # plain tensors only, not a quantized subclass
    plain = all(type(w.data) is Tensor and w.is_floating_point() for w in (w1, w3))
    if not plain or w1.dtype != w3.dtype or w1.device != w3.device or ff.w1.bias is not None:
        return False
    hidden = w1.shape[0]
    with torch.no_grad():
        w13 = torch.cat([w1, w3]).detach()
        ff.w1.weight = nn.Parameter(w13[:hidden], requires_grad=w1.requires_grad)
        ff.w3.weight = nn.Parameter(w13[hidden:], requires_grad=w3.requires_grad)
    object.__setattr__(ff, "w13", w13)  # plain attribute, outside the module's parameters and state dict
    return True


def unfuse_w13(ff: nn.Module) -> None:
    if getattr(ff, "w13", None) is not None:
        object.__delattr__(ff, "w13")


def w13_intact(ff: nn.Module) -> bool:
    """The fused tensor still backs both weights (a memory plan or dtype change would replace them)."""
    w13 = getattr(ff, "w13", None)
    if w13 is None:
        return False
    w = w13.weight if isinstance(w13, Float8Linear) else w13
    h = ff.w1.weight.shape[0]
    return (
        ff.w1.weight.data_ptr() == w.data_ptr()
        and ff.w3.weight.data_ptr() == w[h:].data_ptr()
        and ff.w1.weight.dtype == w.dtype
    )


def ffn_forward(ff: nn.Module, x: Tensor) -> Tensor:
    w13 = getattr(ff, "w13", None)
    # hooks on w1/w3 (unfused adapters) run only through the modules themselves
    if w13 is None or any(m._forward_hooks or m._forward_pre_hooks for m in (ff.w1, ff.w3)):
        return ff(x)
    # dtype/device are static under compile; a dtype change (the fp16 guard's fallback) or a move leaves w13
    # stale, and then the two reference GEMMs run (fp8 weights keep their dtype: only moves matter)
    if isinstance(w13, Float8Linear):
        if w13.weight.device != ff.w1.weight.device:
            return ff(x)
        a, b = w13(x).chunk(2, dim=-1)
    elif w13.dtype != ff.w1.weight.dtype or w13.device != ff.w1.weight.device:
        return ff(x)
    else:
        a, b = F.linear(x, w13).chunk(2, dim=-1)
    return ff.w2(F.silu(a) * b)


# -- attention with a chosen backend --


def attention_forward(attn: nn.Module, x: Tensor, rope, key_mask: Tensor | None, backend: str) -> Tensor:
    q_size, kv_size = attn.n_heads * attn.head_dim, attn.n_kv_heads * attn.head_dim
    q, k, v = attn.qkv(x).split([q_size, kv_size, kv_size], dim=-1)
    q = apply_rope(attn.q_norm(q.unflatten(-1, (attn.n_heads, attn.head_dim))), rope.cos, rope.sin)
    k = apply_rope(attn.k_norm(k.unflatten(-1, (attn.n_kv_heads, attn.head_dim))), rope.cos, rope.sin)
    v = v.unflatten(-1, (attn.n_kv_heads, attn.head_dim))
    order = backend_order(backend)
    attend = masked_attention if key_mask is not None or not order else _backend_attention(order)
    if rope.segments is not None:  # packed CFG branches: each attends only to itself
        return attn.out(segmented(attend, q, k, v, rope.segments))
    return attn.out(attend(q, k, v, key_mask))


def _backend_attention(order: list[SDPBackend]):
    def attend(q: Tensor, k: Tensor, v: Tensor, key_mask: None) -> Tensor:
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        with sdpa_kernel(order, set_priority=True):
            o = F.scaled_dot_product_attention(q, k, v, enable_gqa=q.shape[1] != k.shape[1])
        return o.transpose(1, 2).flatten(2)

    return attend


# Two functions, not one with a branch: dynamo keeps its compiled graphs and its shape history per function,
# so the caption refiner's lengths (256, then 40) no longer recompile the modulated blocks, nor theirs it
# (H200, 2026-12-01: 6 graphs per CFG step with one function, each 2-5 s of a warm compile).


def plain_block_forward(
    self, x: Tensor, rope, key_mask: Tensor | None, adaln: Tensor | None = None
) -> Tensor:
    backend, ff = self.attn_backend, self.feed_forward
    h = self._fit(attention_forward(self.attention, self.attention_norm1(x), rope, key_mask, backend))
    x = x + self.attention_norm2(h)
    return x + self.ffn_norm2(self._fit(ffn_forward(ff, self.ffn_norm1(x))))


def modulated_block_forward(self, x: Tensor, rope, key_mask: Tensor | None, adaln: Tensor) -> Tensor:
    backend, ff = self.attn_backend, self.feed_forward
    mod = per_token(self.adaLN_modulation(adaln), rope.segments)
    scale_msa, gate_msa, scale_mlp, gate_mlp = mod.chunk(4, -1)
    h = self._fit(
        attention_forward(self.attention, self.attention_norm1(x) * (1 + scale_msa), rope, key_mask, backend)
    )
    x = x + gate_msa.tanh() * self.attention_norm2(h)
    h = self._fit(ffn_forward(ff, self.ffn_norm1(x) * (1 + scale_mlp)))
    return x + gate_mlp.tanh() * self.ffn_norm2(h)


def enable(dit: nn.Module, attention: str = "auto", w13: bool = True) -> dict:
    """Switch every block to the fast forward. Returns what was switched on."""
    backend_order(attention)  # validate the name
    fused = 0
    for block in dit.blocks():
        block.attn_backend = attention
        forward = modulated_block_forward if block.modulated else plain_block_forward
        block.forward = types.MethodType(forward, block)
        if w13:
            fused += fuse_w13(block.feed_forward)
        else:
            unfuse_w13(block.feed_forward)
    return {"attention": attention, "w13_fused_blocks": fused}


def disable(dit: nn.Module) -> None:
    """Back to the reference modules (the weights keep their values; w1/w3 stay views, which is harmless)."""
    for block in dit.blocks():
        block.__dict__.pop("forward", None)
        unfuse_w13(block.feed_forward)


# -- regional compile --


def compile_blocks(dit: nn.Module, **compile_kwargs) -> None:
    """torch.compile each repeated block as one full graph (one compiled graph serves every layer of a kind)."""
    for block in dit.blocks():
        block.compile(fullgraph=True, **compile_kwargs)


def uncompile_blocks(dit: nn.Module) -> None:
    """Every block back on its uncompiled forward (also those honour_hooks had set aside)."""
    for block in dit.blocks():
        block._compiled_call_impl = None
        block.__dict__.pop("_compiled_stash", None)


# -- hooks added after compiling --


def honour_hooks(dit: nn.Module) -> int:
    """Blocks holding a module with forward hooks (unfused adapters, `newbie trace`) run their eager forward;
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
    The key includes each module's hooks and the fp16-clamp flag: unfused adapters or the guard changing
    the computation force a new capture instead of a stale replay.
    """

    def __init__(self, dit: nn.Module, max_graphs: int = 8, warmup: int = 2):
        self.dit, self.max_graphs, self.warmup = dit, max_graphs, warmup
        self.forward = type(dit).forward.__get__(dit)  # the unwrapped module forward
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
        return hooks, first.dtype, first.device, bool(getattr(self.dit.layers[0], "clamp_fp16", False))

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
        key = (tuple((a.shape, a.dtype) for a in inputs), rope.segments, self._state())
        entry = self.graphs.get(key)
        if entry is None:
            entry = self._capture(key, inputs, rope.segments)
        self.graphs.move_to_end(key)
        static_in, graph, out = entry
        for dst, src in zip(static_in, inputs):
            dst.copy_(src)
        graph.replay()
        self.replays += 1
        return out.clone()

    def _capture(self, key, inputs, segments):
        from newbie.model.dit import Rope

        static_in = tuple(a.detach().clone() for a in inputs)
        sx, st, scap, spool, scos, ssin = static_in

        def run():
            return self.forward(sx, st, scap, None, spool, Rope(scos, ssin, segments=segments), None)

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
    dit.__dict__.pop("forward", None)
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
    took 3.9 s and its recorded dynamic-shape profile made 4 of 6 graphs miss the FX graph cache (H200,
    2026-12-01, docs/benchmarks.md)."""
    default = str(Path.home() / ".cache/newbie/inductor")
    folder = cache_dir or os.environ.get("TORCHINDUCTOR_CACHE_DIR") or default
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
    torch._inductor.config.fx_graph_cache = True
    torch._functorch.config.enable_autograd_cache = True
    return folder

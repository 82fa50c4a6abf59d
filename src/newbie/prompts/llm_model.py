"""Gemma3 as a chat model: loaded alone (no DiT, Jina or VAE), and run token by token with its tied embedding
table as the output head, over our own static KV cache (a CUDA graph per token on CUDA, of the eager step or
of the torch.compile'd one)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from newbie.errors import NewbieError
from newbie.model.gemma import FULL, SLIDING, KVSlot


def lm_logits(gemma, hidden: torch.Tensor) -> torch.Tensor:
    """(D,) or (1, D) final-normed hidden -> (V,) float32 logits through the tied embedding table."""
    table = gemma.embed_tokens.weight
    logits = (hidden.reshape(1, -1).to(table.device, table.dtype) @ table.T).float()[0]
    cap = getattr(gemma.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def _embed(gemma, ids: torch.Tensor, device) -> torch.Tensor:
    table = gemma.embed_tokens.weight  # a memory plan may keep it on the CPU: look up where it is
    return gemma.embed_tokens(ids.to(table.device)).to(device)


DECODER_KINDS = ("auto", "eager", "compiled")


def check_decoder_kind(kind: str) -> None:
    """A NewbieError naming the choices unless `kind` is one of DECODER_KINDS (callers check before loading)."""
    if kind not in DECODER_KINDS:
        raise NewbieError(f"unknown decoder '{kind}' (choose from {', '.join(DECODER_KINDS)})")


class StaticDecoder:
    """Our Gemma decoder over a preallocated KV cache: the prompt in one pass, then one token per step, each
    through every layer's own forward (so a memory plan's streaming hooks fire). On CUDA, with every weight
    on the device, the step (embedding, layers, logits) is captured once as a CUDA graph, so a token costs
    one graph launch instead of thousands of kernel launches from Python. Same modules and weights as the
    encoder.

    compile_backend: the one-token step over the whole cache is torch.compile'd first (static shapes, one
    graph), so the captured graph replays fused kernels instead of ~80 small ones per layer; on the CPU the
    compiled step runs as it is. If compiling or capturing it fails, the plain step is captured instead and
    graph_error says why."""

    def __init__(
        self,
        gemma,
        max_len: int,
        device: torch.device,
        use_graph: bool = True,
        compile_backend: str | None = None,
    ):
        cfg = gemma.config
        device = _indexed(device)
        self.gemma, self.device, self.max_len = gemma, device, max_len
        dtype = gemma.norm.weight.dtype
        kv_shape = (1, cfg.num_key_value_heads, max_len, cfg.head_dim)
        self.slots = [
            KVSlot(
                torch.zeros(kv_shape, device=device, dtype=dtype),
                torch.zeros(kv_shape, device=device, dtype=dtype),
            )
            for _ in gemma.layers
        ]
        self.keys = torch.arange(max_len, device=device)
        # cos/sin for every position, per layer type, from the model's own rotary module (its scaling rules)
        probe = torch.zeros(1, device=device, dtype=dtype)
        self.rope = {t: gemma.rotary_emb(probe, self.keys[None], t) for t in set(cfg.layer_types)}
        self.window = cfg.sliding_window
        # the embedding's sqrt(hidden) factor on the device: the module multiplies by a CPU scalar tensor,
        # which inside a compiled step becomes a host-to-device copy that a CUDA graph cannot hold (same bits)
        emb = gemma.embed_tokens
        self.embed_scale = torch.tensor(emb.scale, dtype=emb.weight.dtype).to(emb.weight.device)
        # the static step's inputs: the token and its position, written in place before each step
        self.tok = torch.zeros(1, dtype=torch.long, device=device)
        self.pos = torch.full((1,), max_len - 1, dtype=torch.long, device=device)  # warm-up slot
        self.graph = None
        self.graph_error = ""
        # StaticDecoder.static_step compiled, once it has run (unbound: no reference cycle through self)
        self.compiled = None
        self.resident = _all_on(gemma, device)  # else some weights come and go in hooks: no graph
        # inference only: a step compiled or captured under autograd would record for nothing
        with torch.no_grad():
            if compile_backend and self.resident:
                self._compile(compile_backend)
            if use_graph and device.type == "cuda" and self.resident:
                self._capture()

    def forward(self, h: torch.Tensor, pos: torch.Tensor, n_keys: int | None = None) -> torch.Tensor:
        """h (1, T, D) embedded tokens at positions pos (T,) -> (1, D) final-normed hidden of the last one.
        n_keys: attend over the first n_keys cache slots only (eager steps); a static step reads them all."""
        keys = self.keys[: n_keys or self.max_len]
        causal = keys[None, :] <= pos[:, None]  # (T, L): unwritten slots are never read
        masks = {
            FULL: causal[None, None],
            SLIDING: (causal & (keys[None, :] > pos[:, None] - self.window))[None, None],
        }
        rope = {
            t: tuple(c.index_select(1, pos)[:, None] for c in cs) for t, cs in self.rope.items()
        }  # (1, 1, T, hd)
        for layer, slot in zip(self.gemma.layers, self.slots):
            slot.pos, slot.n_keys = pos, n_keys
            h = layer(h, rope[layer.layer_type], masks[layer.layer_type], slot)
        return self.gemma.norm(h[:, -1])

    def _logits_at(self, ids: torch.Tensor, pos: torch.Tensor, n_keys: int | None = None) -> torch.Tensor:
        return lm_logits(self.gemma, self.forward(_embed(self.gemma, ids[None], self.device), pos, n_keys))

    def static_step(self, tok: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """One token (1,) at position pos (1,) over the whole cache: the same shapes at every step, so it can
        be captured and compiled. Only with every weight on the device: no hook to fire."""
        h = F.embedding(tok[None], self.gemma.embed_tokens.weight) * self.embed_scale  # (1, 1, D)
        return lm_logits(self.gemma, self.forward(h, pos))

    def _compile(self, backend: str) -> None:
        # dynamo caches per code object: a later decoder of the same shapes runs this one's code, no compile
        fn = torch.compile(StaticDecoder.static_step, backend=backend, fullgraph=True, dynamic=False)
        try:
            self.compiled = fn
            self._warm_up()  # compiles now: its cost is the decoder's setup, its failure said here
        except TimeoutError:  # a caller's time limit, not a failed compile
            raise
        except Exception as e:  # noqa: BLE001 - the plain step still works; graph_error says why
            self.compiled = None
            self.graph_error = f"compile failed, plain step instead: {type(e).__name__}: {e}"
            _sync(self.device)

    def run_static(self, tok: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """The static step, compiled when it is."""
        if self.compiled is not None:
            return self.compiled(self, tok, pos)
        return self.static_step(tok, pos)

    def _warm_up(self) -> None:
        """The static step twice at the warm-up slot, on a side stream on CUDA (as capture needs)."""
        if self.device.type != "cuda":
            self.run_static(self.tok, self.pos)
            return
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self.run_static(self.tok, self.pos)
        torch.cuda.current_stream(self.device).wait_stream(side)

    def _capture(self) -> None:
        try:
            self._warm_up()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.out = self.run_static(self.tok, self.pos)
            self.graph = graph
        except TimeoutError:
            raise
        except Exception as e:  # noqa: BLE001 - e.g. a quantized kernel that cannot be captured: eager steps work
            torch.cuda.synchronize(self.device)
            why = f"{type(e).__name__}: {e}"
            if self.compiled is not None:  # the plain step's graph, then
                self.compiled = None
                self.graph_error = f"the compiled step could not be captured, plain graph instead: {why}"
                self._capture()
                return
            self.graph = None
            self.graph_error = f"{self.graph_error}; {why}" if self.graph_error else why

    @torch.no_grad()
    def prefill(self, ids: list[int]) -> torch.Tensor:
        n = len(ids)
        if n >= self.max_len:
            raise NewbieError(f"the expansion prompt is {n} tokens; the cache holds {self.max_len}")
        t = torch.tensor(ids, device=self.device)
        self.n = n
        return self._logits_at(t, torch.arange(n, device=self.device), n)

    @torch.no_grad()  # the compiled step was traced so: no recompile for a caller with autograd on
    def step(self, token: int) -> torch.Tensor:
        if self.n >= self.max_len:
            raise NewbieError("the expansion ran past its token budget")
        if self.graph is not None or self.compiled is not None:
            self.tok.fill_(token)
            self.pos.fill_(self.n)
            if self.graph is not None:
                self.graph.replay()
                out = self.out
            else:
                out = self.run_static(self.tok, self.pos)
        else:
            out = self._logits_at(
                torch.tensor([token], device=self.device),
                torch.tensor([self.n], device=self.device),
                self.n + 1,
            )
        self.n += 1
        return out


def _all_on(module, device: torch.device) -> bool:
    return all(p.device == device for p in module.parameters())


def _indexed(device: torch.device) -> torch.device:
    """ "cuda" -> "cuda:N" (the current device): a tensor's .device always carries the index, and
    torch.device("cuda:0") != torch.device("cuda"), so unindexed devices would never match a weight's."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def make_decoder(
    gemma, max_len: int, device: torch.device, kind: str = "auto", backend: str = "inductor"
) -> StaticDecoder:
    """ "auto" (a CUDA graph of the eager step on CUDA when every weight is on the device), "eager" (never a
    graph) or "compiled" (as auto, of the step torch.compile'd with `backend` first; on the CPU the compiled
    step alone)."""
    check_decoder_kind(kind)
    return StaticDecoder(
        gemma,
        max_len,
        device,
        use_graph=kind != "eager",
        compile_backend=backend if kind == "compiled" else None,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_gemma_only(model=None, text_encoder=None, device: str | None = None, dtype: str = "auto"):
    """(gemma, tokenizer, device, notice) from a model folder (default: the demo model), without the DiT,
    Jina or VAE: for `newbie prompt expand --llm`, which needs only the chat model."""
    from newbie.demo.model import resolve_model
    from newbie.device import DTYPES, parse_dtype, resolve_device
    from newbie.loading.folder import locate
    from newbie.loading.text import load_gemma, load_tokenizer

    model, notice = resolve_model(model)  # None or "demo": the embedded demo model
    dev = resolve_device(device)
    dtype = parse_dtype(dtype, dev)
    folder = locate(model, text_encoder)
    if folder.text_encoder is None:
        raise NewbieError(
            f"{folder.name}: no Gemma3 text encoder (text_encoder/); give --text-encoder, "
            "or drop --llm for the rule-based expander"
        )
    gemma = load_gemma(folder.text_encoder, DTYPES[dtype], dev)
    return gemma, load_tokenizer(folder.gemma_tokenizer_dirs, "Gemma"), dev, notice

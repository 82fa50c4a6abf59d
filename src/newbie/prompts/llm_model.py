"""Gemma3 as a chat model: loaded alone (no DiT, Jina or VAE), and run token by token with its tied embedding
table as the output head, over our own static KV cache (a CUDA graph per token on CUDA) or transformers'
forward (streamed layers)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from newbie.errors import NewbieError


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


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class StaticDecoder:
    """Gemma3TextModel's math over a preallocated KV cache: the prompt in one pass, then one token per step.
    On CUDA the step (embedding, 34 layers, logits) is captured once as a CUDA graph, so a token costs one
    graph launch instead of thousands of kernel launches from Python. Same modules and weights as the encoder."""

    def __init__(self, gemma, max_len: int, device: torch.device, use_graph: bool = True):
        cfg = gemma.config
        device = _indexed(device)
        self.gemma, self.device, self.max_len = gemma, device, max_len
        dtype = gemma.norm.weight.dtype
        kv_shape = (1, cfg.num_key_value_heads, max_len, cfg.head_dim)
        self.k = [torch.zeros(kv_shape, device=device, dtype=dtype) for _ in gemma.layers]
        self.v = [torch.zeros(kv_shape, device=device, dtype=dtype) for _ in gemma.layers]
        self.keys = torch.arange(max_len, device=device)
        self.types = list(cfg.layer_types)
        # cos/sin for every position, per layer type, from the model's own rotary module (its scaling rules)
        probe = torch.zeros(1, device=device, dtype=dtype)
        self.rope = {t: gemma.rotary_emb(probe, self.keys[None], t) for t in set(self.types)}
        self.window = cfg.sliding_window
        self.graph = None
        self.graph_error = ""
        if use_graph and device.type == "cuda" and gemma.embed_tokens.weight.device == device:
            self._capture()

    def forward(self, h: torch.Tensor, pos: torch.Tensor, n_keys: int | None = None) -> torch.Tensor:
        """h (1, T, D) embedded tokens at positions pos (T,) -> (1, D) final-normed hidden of the last one.
        n_keys: attend over the first n_keys cache slots only (eager steps); a CUDA graph reads them all."""
        T, L = h.shape[1], n_keys or self.max_len
        keys = self.keys[:L]
        causal = keys[None, :] <= pos[:, None]  # (T, L): unwritten slots are never read
        sliding = causal & (keys[None, :] > pos[:, None] - self.window)
        rope = {
            k: [t.index_select(1, pos)[:, None] for t in cs] for k, cs in self.rope.items()
        }  # (1, 1, T, hd)
        for i, layer in enumerate(self.gemma.layers):
            attn = layer.self_attn
            cos, sin = rope[self.types[i]]
            x = layer.input_layernorm(h)
            q = attn.q_norm(attn.q_proj(x).view(1, T, -1, attn.head_dim).transpose(1, 2))  # (1, H, T, hd)
            k = attn.k_norm(attn.k_proj(x).view(1, T, -1, attn.head_dim).transpose(1, 2))  # (1, KV, T, hd)
            v = attn.v_proj(x).view(1, T, -1, attn.head_dim).transpose(1, 2)
            q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
            self.k[i].index_copy_(2, pos, k)
            self.v[i].index_copy_(2, pos, v)
            mask = sliding if self.types[i] == "sliding_attention" else causal
            o = F.scaled_dot_product_attention(
                q,
                self.k[i][:, :, :L],
                self.v[i][:, :, :L],
                attn_mask=mask[None, None],
                scale=attn.scaling,
                enable_gqa=True,
            )
            h = h + layer.post_attention_layernorm(attn.o_proj(o.transpose(1, 2).reshape(1, T, -1)))
            h = h + layer.post_feedforward_layernorm(layer.mlp(layer.pre_feedforward_layernorm(h)))
        return self.gemma.norm(h[:, -1])

    def _logits_at(self, ids: torch.Tensor, pos: torch.Tensor, n_keys: int | None = None) -> torch.Tensor:
        return lm_logits(self.gemma, self.forward(_embed(self.gemma, ids[None], self.device), pos, n_keys))

    def _capture(self) -> None:
        self.tok = torch.zeros(1, dtype=torch.long, device=self.device)
        self.pos = torch.full((1,), self.max_len - 1, dtype=torch.long, device=self.device)  # warm-up slot
        try:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    self._logits_at(self.tok, self.pos)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.out = self._logits_at(self.tok, self.pos)
            self.graph = graph
        except Exception as e:  # noqa: BLE001 - e.g. a quantized kernel that cannot be captured: eager steps work
            self.graph, self.graph_error = None, f"{type(e).__name__}: {e}"
            torch.cuda.synchronize(self.device)

    def prefill(self, ids: list[int]) -> torch.Tensor:
        n = len(ids)
        if n >= self.max_len:
            raise NewbieError(f"the expansion prompt is {n} tokens; the cache holds {self.max_len}")
        t = torch.tensor(ids, device=self.device)
        self.n = n
        return self._logits_at(t, torch.arange(n, device=self.device), n)

    def step(self, token: int) -> torch.Tensor:
        if self.n >= self.max_len:
            raise NewbieError("the expansion ran past its token budget")
        if self.graph is not None:
            self.tok.fill_(token)
            self.pos.fill_(self.n)
            self.graph.replay()
            out = self.out
        else:
            out = self._logits_at(
                torch.tensor([token], device=self.device),
                torch.tensor([self.n], device=self.device),
                self.n + 1,
            )
        self.n += 1
        return out


class ReferenceDecoder:
    """Gemma3TextModel.forward with transformers' DynamicCache. Slower, but it goes through each layer's
    forward, so streamed layers (memory plans that move blocks in forward hooks) work; also the reference
    the static decoder is tested against."""

    def __init__(self, gemma, device: torch.device):
        from transformers import DynamicCache

        self.gemma, self.device = gemma, device
        self.cache = DynamicCache(config=gemma.config)
        self.graph, self.graph_error = None, ""

    def _run(self, ids: list[int]) -> torch.Tensor:
        embeds = _embed(self.gemma, torch.tensor([ids]), self.device)
        out = self.gemma(inputs_embeds=embeds, past_key_values=self.cache, use_cache=True)
        return lm_logits(self.gemma, out.last_hidden_state[:, -1])

    def prefill(self, ids: list[int]) -> torch.Tensor:
        return self._run(ids)

    def step(self, token: int) -> torch.Tensor:
        return self._run([token])


def _all_on(module, device: torch.device) -> bool:
    return all(p.device == device for p in module.parameters())


def _indexed(device: torch.device) -> torch.device:
    """ "cuda" -> "cuda:N" (the current device): a tensor's .device always carries the index, and
    torch.device("cuda:0") != torch.device("cuda"), so unindexed devices would never match a weight's."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def make_decoder(gemma, max_len: int, device: torch.device, kind: str = "auto"):
    """ "static" (own KV cache, CUDA graph on CUDA), "reference" (transformers forward), or "auto": static
    unless some layer weights are elsewhere (streamed by a memory plan)."""
    device = _indexed(device)
    if kind == "auto":
        kind = (
            "static" if _all_on(gemma.layers, device) and gemma.norm.weight.device == device else "reference"
        )
    if kind == "static":
        return StaticDecoder(gemma, max_len, device)
    if kind == "reference":
        return ReferenceDecoder(gemma, device)
    raise NewbieError(f"unknown decoder '{kind}' (choose from auto, static, reference)")


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

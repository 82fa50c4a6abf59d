"""Jina CLIP v2's text tower: XLM-RoBERTa with rotary positions (the jina-embeddings-v3 body), as
transformers' JinaEmbeddingsV3Model(add_pooling_layer=False) computes it (spec §3.3).

Post-norm encoder: embeddings (word + the one token type) -> LayerNorm, then per layer
x = LN(x + attn(x)), x = LN(x + fc2(gelu(fc1(x)))). No absolute positions: rotate-half RoPE on q and k.
The checkpoint's LoRA task adapters are not part of it (the pooled text feature is computed without them).
Module names are transformers' native ones, which loading/text.py maps the original flash names to.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from newbie.model.embedding import Embedding


@dataclass(frozen=True)
class JinaConfig:
    # defaults: jina-embeddings-v3's (= Jina CLIP v2's text tower), which jina-clip's config overrides
    vocab_size: int = 250002
    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    hidden_act: str = "gelu"  # the exact (erf) GELU
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    rope_theta: float = 20000.0

    def __post_init__(self):
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "type_vocab_size",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        heads = self.num_attention_heads
        if self.hidden_size % heads or (self.hidden_size // heads) % 2:
            raise ValueError(f"hidden_size {self.hidden_size} must split into {heads} heads of an even width")
        if self.hidden_act != "gelu":
            raise ValueError(f"hidden_act '{self.hidden_act}' is not supported (Jina uses 'gelu')")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_fields(cls, raw: dict) -> JinaConfig:
        """From a jina_embeddings_v3 config.json or jina-clip's `hf_model_config_kwargs`: the fields known
        here, the RoPE base from `rope_parameters` (transformers 5) or `rotary_emb_base` (original code)."""
        known = {f.name for f in fields(cls)}
        out = {k: v for k, v in raw.items() if k in known}
        rope = raw.get("rope_parameters") or {}
        if rope.get("rope_type", "default") != "default":
            raise ValueError(f"rope_type '{rope['rope_type']}' is not supported (Jina uses 'default')")
        if "rope_theta" in rope:
            out["rope_theta"] = float(rope["rope_theta"])
        elif raw.get("rotary_emb_base") is not None:
            out["rope_theta"] = float(raw["rotary_emb_base"])
        return cls(**out)


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Embeddings(nn.Module):
    def __init__(self, cfg: JinaConfig):
        super().__init__()
        self.word_embeddings = Embedding(cfg.vocab_size, cfg.hidden_size)
        self.token_type_embeddings = Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: Tensor) -> Tensor:
        # every token is of type 0 (text encoding never passes segment ids)
        return self.LayerNorm(self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0])


class Attention(nn.Module):
    def __init__(self, cfg: JinaConfig):
        super().__init__()
        d = cfg.hidden_size
        self.n_heads, self.head_dim = cfg.num_attention_heads, cfg.head_dim
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None) -> Tensor:
        B, L, _ = x.shape
        q, k, v = (
            p(x).view(B, L, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, L, hd)
            for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        # softmax scale 1/sqrt(head_dim), passed as transformers passes it
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.head_dim**-0.5)
        return self.o_proj(out.transpose(1, 2).reshape(B, L, -1))


class MLP(nn.Module):
    def __init__(self, cfg: JinaConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Layer(nn.Module):
    def __init__(self, cfg: JinaConfig):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg)
        self.post_mlp_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None) -> Tensor:
        x = self.post_attention_layernorm(x + self.self_attn(x, cos, sin, mask))
        return self.post_mlp_layernorm(x + self.mlp(x))


class JinaTextModel(nn.Module):
    def __init__(self, cfg: JinaConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_hidden_layers))
        # Built on the CPU in fp32 even when the model is built on meta, then moved with the model: the same
        # table (to the bit) as transformers', whose buffer is made at construction too.
        d = cfg.head_dim
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float, device="cpu") / d))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @property
    def device(self) -> torch.device:
        return self.embeddings.word_embeddings.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embeddings.word_embeddings.weight.dtype

    def rope(self, length: int, like: Tensor) -> tuple[Tensor, Tensor]:
        """cos, sin (1, 1, L, head_dim) for positions 0..L-1: angles in fp32, then the activations' dtype."""
        pos = torch.arange(length, device=like.device)[None, :, None].float()  # (1, L, 1)
        freqs = pos * self.inv_freq.to(device=like.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)[:, None]
        return emb.cos().to(like.dtype), emb.sin().to(like.dtype)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """input_ids, attention_mask (B, L) -> last hidden state (B, L, hidden_size). Padded keys are masked;
        padded positions still get (meaningless) outputs, which the caller's masked mean leaves out."""
        L = input_ids.shape[1]
        x = self.embeddings(input_ids)
        cos, sin = self.rope(L, x)
        mask = None
        # No padding: no mask, which lets SDPA pick its fastest kernel. With padding, the mask transformers
        # builds, materialized (B, 1, L, L), so that SDPA takes its kernel path on a GPU too
        # (tests/model/jina_device_check.py compares there).
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask.bool()[:, None, None, :].expand(-1, 1, L, -1).contiguous()  # keys only
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return x

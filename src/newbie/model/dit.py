"""NextDiT_CLIP, the NewBie image Exp0.1 transformer (spec §2).

Module names equal the official checkpoint keys, so its state dict loads with no mapping.
Time convention here is the official one: t = 0 is noise, t = 1 is data, output = velocity (data - noise).
The samplers use sigma (1 = noise); `newbie.sampling.guidance` converts at the model edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from newbie.config import DiTConfig
from newbie.model.math import (
    apply_rope,
    attention,
    rms_norm,
    rope_angles,
    rope_inv_freqs,
    timestep_embedding,
)
from newbie.model.step_cache import StepCache


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)


class TokenShard(Protocol):
    """This process's slice of the tokens under sequence parallelism (newbie.parallel.sequence.Shard)."""

    def attention(self, q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, backend: str) -> Tensor: ...

    def cache_usable(self, cache: StepCache, first_residual: Tensor) -> bool: ...


@dataclass
class Rope:
    """Per-request RoPE tables, built once outside forward (no host syncs inside the network)."""

    cos: Tensor  # (B, N, head_dim/2)
    sin: Tensor
    shard: TokenShard | None = None  # sequence parallelism: how the tokens these tables cover are spread

    def slice(self, start: int, stop: int) -> Rope:
        # copies, not views: a view's storage offset and its batch stride (the parent's length) are guards of
        # the compiled blocks, so the image part of the tables would otherwise get graphs of its own
        # (.contiguous() keeps such a view: a size-1 batch dim counts as contiguous whatever its stride)
        return Rope(
            *(t[:, start:stop].clone(memory_format=torch.contiguous_format) for t in (self.cos, self.sin))
        )


class Attention(nn.Module):
    """Self-attention with q/k RMS norms and 3-axis RoPE. `backend`: the SDPA kernel preferred for unmasked
    calls ("auto": PyTorch's own choice; see math.backend_order), set by `fused.enable`."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.dim, (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim, bias=False)
        self.out = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.qk_norm_eps)
        self.k_norm = RMSNorm(cfg.head_dim, cfg.qk_norm_eps)
        self.backend = "auto"

    def heads(self, x: Tensor, rope: Rope) -> tuple[Tensor, Tensor, Tensor]:
        """q (B, N, Hq, D), k and v (B, N, Hkv, D): projected, q and k normed and rotated."""
        q_size, kv_size = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        q, k, v = self.qkv(x).split([q_size, kv_size, kv_size], dim=-1)
        q = apply_rope(self.q_norm(q.unflatten(-1, (self.n_heads, self.head_dim))), rope.cos, rope.sin)
        k = apply_rope(self.k_norm(k.unflatten(-1, (self.n_kv_heads, self.head_dim))), rope.cos, rope.sin)
        return q, k, v.unflatten(-1, (self.n_kv_heads, self.head_dim))

    def forward(self, x: Tensor, rope: Rope, key_mask: Tensor | None) -> Tensor:
        q, k, v = self.heads(x, rope)
        if rope.shard is not None:  # sequence parallel: all-to-all, attention over every token, all-to-all
            return self.out(rope.shard.attention(q, k, v, key_mask, self.backend))
        return self.out(attention(q, k, v, key_mask, self.backend))


class FeedForward(nn.Module):
    """SwiGLU. `fuse()` runs w1 and w3 as one GEMM: their weights become views into one (2·hidden, dim)
    tensor, so the state dict keeps the official `w1`/`w3` keys and in-place edits (fused LoRA) reach both."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_hidden, bias=False)
        self.w2 = nn.Linear(cfg.ffn_hidden, cfg.dim, bias=False)
        self.w3 = nn.Linear(cfg.dim, cfg.ffn_hidden, bias=False)

    def fuse(self) -> bool:
        """Plain float weights, or two linears of a class with `concat_rows` (fp8: one quantized linear over
        both, exactly the two products). Other weights keep two GEMMs. Returns whether it fused."""
        if self.__dict__.get("w13") is not None:
            return True
        w1, w3 = self.w1, self.w3
        if w1.bias is not None or w3.bias is not None or w1.weight.device != w3.weight.device:
            return False
        concat = getattr(type(w1), "concat_rows", None)
        if concat is not None and type(w3) is type(w1):
            w13 = concat([w1, w3])
        elif all(type(w.weight.data) is Tensor and w.weight.is_floating_point() for w in (w1, w3)):
            if w1.weight.dtype != w3.weight.dtype:
                return False
            hidden = w1.weight.shape[0]
            with torch.no_grad():
                w13 = torch.cat([w1.weight, w3.weight]).detach()
                w1.weight = nn.Parameter(w13[:hidden], requires_grad=w1.weight.requires_grad)
                w3.weight = nn.Parameter(w13[hidden:], requires_grad=w3.weight.requires_grad)
        else:
            return False
        # plain attributes, outside the module's parameters and state dict
        object.__setattr__(self, "w13", w13)
        object.__setattr__(self, "w13_of", (w1, w3))
        return True

    def unfuse(self) -> None:
        """Back to two GEMMs (w1/w3 stay views of the one tensor, which is harmless)."""
        self.__dict__.pop("w13", None)
        self.__dict__.pop("w13_of", None)

    def _w13(self) -> Tensor | nn.Module | None:
        """The fused weight while it still computes w1|w3: not after the layers were wrapped (unfused
        adapters) or replaced, nor after a dtype change (the fp16 guard's fallback) or a move left it stale,
        nor while hooks watch w1/w3 (a trace), which run only through the modules themselves. All of it is
        static under compile, so this costs nothing there."""
        w13 = self.__dict__.get("w13")
        if w13 is None or self.w13_of[0] is not self.w1 or self.w13_of[1] is not self.w3:
            return None
        if any(m._forward_hooks or m._forward_pre_hooks for m in (self.w1, self.w3)):
            return None
        if isinstance(w13, nn.Module):  # quantized weights keep their dtype: only moves matter
            return w13 if w13.weight.device == self.w1.weight.device else None
        same = w13.dtype == self.w1.weight.dtype and w13.device == self.w1.weight.device
        return w13 if same else None

    def forward(self, x: Tensor) -> Tensor:
        w13 = self._w13()
        if w13 is None:
            return self.w2(nn.functional.silu(self.w1(x)) * self.w3(x))
        a, b = (w13(x) if isinstance(w13, nn.Module) else nn.functional.linear(x, w13)).chunk(2, dim=-1)
        return self.w2(nn.functional.silu(a) * b)


class Block(nn.Module):
    """Sandwich-norm block, modulated: scale by (1 + scale) and gate with tanh (no shift terms)."""

    modulated = True

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.clamp_fp16 = False  # set by the fp16 guard after an overflow
        self.attention = Attention(cfg)
        self.feed_forward = FeedForward(cfg)
        self.attention_norm1 = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention_norm2 = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn_norm1 = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn_norm2 = RMSNorm(cfg.dim, cfg.norm_eps)
        if self.modulated:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cfg.adaln_dim, 4 * cfg.dim))

    def _fit(self, h: Tensor) -> Tensor:
        # fp16 guard: keep attention/FFN outputs inside the fp16 range (the sandwich norm follows)
        return torch.nan_to_num(h, nan=0.0, posinf=65504.0, neginf=-65504.0) if self.clamp_fp16 else h

    def forward(self, x: Tensor, rope: Rope, key_mask: Tensor | None, adaln: Tensor) -> Tensor:
        scale_msa, gate_msa, scale_mlp, gate_mlp = self.adaLN_modulation(adaln)[:, None].chunk(4, dim=-1)
        h = self._fit(self.attention(self.attention_norm1(x) * (1 + scale_msa), rope, key_mask))
        x = x + gate_msa.tanh() * self.attention_norm2(h)
        h = self._fit(self.feed_forward(self.ffn_norm1(x) * (1 + scale_mlp)))
        return x + gate_mlp.tanh() * self.ffn_norm2(h)


class PlainBlock(Block):
    """The caption refiner's block: no modulation. Its own class, so its own forward: dynamo keeps compiled
    graphs and shape history per function, and the caption's lengths then never recompile the modulated
    blocks (nor theirs it)."""

    modulated = False

    def forward(self, x: Tensor, rope: Rope, key_mask: Tensor | None, adaln: Tensor | None = None) -> Tensor:
        x = x + self.attention_norm2(self._fit(self.attention(self.attention_norm1(x), rope, key_mask)))
        return x + self.ffn_norm2(self._fit(self.feed_forward(self.ffn_norm1(x))))


class FinalLayer(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.norm_final = nn.LayerNorm(cfg.dim, elementwise_affine=False, eps=1e-6)  # no weights
        self.linear = nn.Linear(cfg.dim, cfg.patch_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cfg.adaln_dim, cfg.dim))

    def forward(self, x: Tensor, adaln: Tensor) -> Tensor:
        scale = self.adaLN_modulation(adaln)[:, None]
        return self.linear(self.norm_final(x) * (1 + scale))


class NextDiT(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        self.x_embedder = nn.Linear(cfg.patch_dim, cfg.dim)
        self.t_embedder = _TimestepEmbedder(cfg.adaln_dim)
        self.cap_embedder = nn.Sequential(
            RMSNorm(cfg.cap_feat_dim, cfg.norm_eps), nn.Linear(cfg.cap_feat_dim, cfg.dim)
        )
        # Official shapes at every width (spec §2.3): the pooled projection keeps clip_text_dim, and the
        # time/text mix reads [t_emb (adaln_dim) | clip_emb (clip_text_dim)]. At 3.5B both widths are 1024.
        self.clip_text_pooled_proj = nn.Sequential(
            RMSNorm(cfg.clip_text_dim, cfg.qk_norm_eps), nn.Linear(cfg.clip_text_dim, cfg.clip_text_dim)
        )
        self.time_text_embed = nn.Sequential(
            nn.SiLU(), nn.Linear(cfg.adaln_dim + cfg.clip_text_dim, cfg.adaln_dim)
        )
        self.noise_refiner = nn.ModuleList([Block(cfg) for _ in range(cfg.n_refiner_layers)])
        self.context_refiner = nn.ModuleList([PlainBlock(cfg) for _ in range(cfg.n_refiner_layers)])
        self.layers = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.final_layer = FinalLayer(cfg)
        # set by fused.compile_blocks: mark the caption-carrying sequences length-generic for dynamo
        self.length_generic = False
        # `norm_final` of the checkpoint is never used by the reference forward; it is not built (the
        # loader in loading/dit.py drops it).

    def blocks(self):
        """Every transformer block (joint layers and both refiners): what compile, the fp16 clamp and the
        memory planner treat as the repeated unit."""
        for group in (self.layers, self.noise_refiner, self.context_refiner):
            yield from group

    # -- request-level preparation (called once per generate, outside the step loop) --

    def rope(self, cap_len: Tensor, cap_tokens: int, grid_h: int, grid_w: int) -> Rope:
        """RoPE for [caption (padded to cap_tokens) | image grid]. Caption token i -> (i, 0, 0);
        image patch (r, c) -> (cap_len, r, c), where cap_len is each sample's valid caption length."""
        b, device = cap_len.shape[0], cap_len.device
        cap_pos = torch.zeros(b, cap_tokens, 3, device=device)
        cap_pos[..., 0] = torch.arange(cap_tokens, device=device)
        rows = torch.arange(grid_h, device=device).repeat_interleave(grid_w)
        cols = torch.arange(grid_w, device=device).repeat(grid_h)
        img_pos = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).float()[None].repeat(b, 1, 1)
        img_pos[..., 0] = cap_len.float()[:, None]
        inv = rope_inv_freqs(self.cfg.axes_dims, self.cfg.rope_theta, device)
        angles = rope_angles(torch.cat([cap_pos, img_pos], dim=1), inv)  # (B, L + N, head_dim/2)
        return Rope(angles.cos(), angles.sin())

    # -- patchify --

    def patchify(self, x: Tensor) -> Tensor:
        p = self.cfg.patch_size
        b, c, h, w = x.shape
        x = x.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)  # (B, H/p, W/p, py, px, C)
        return x.reshape(b, (h // p) * (w // p), p * p * c)

    def unpatchify(self, x: Tensor, h: int, w: int) -> Tensor:
        p, c = self.cfg.patch_size, self.cfg.in_channels
        b = x.shape[0]
        x = x.view(b, h // p, w // p, p, p, c).permute(0, 5, 1, 3, 2, 4)  # (B, C, H/p, py, W/p, px)
        return x.reshape(b, c, h, w)

    # -- forward: the stages, which sequence parallelism (newbie.parallel.sequence) runs on token shards --

    def forward(
        self,
        x: Tensor,  # (B, C, H, W) latent
        t: Tensor,  # (B,) official time, 0 = noise
        cap_feats: Tensor,  # (B, L, cap_feat_dim), right-padded
        cap_mask: Tensor | None,  # (B, L) bool, None when no caption token is padding
        pooled: Tensor,  # (B, clip_text_dim) Jina pooled feature
        rope: Rope | None = None,
        cache: StepCache | None = None,
    ) -> Tensor:
        b, _, h, w = x.shape
        n_cap = cap_feats.shape[1]
        if rope is None:
            rope = self.default_rope(x, cap_feats, cap_mask)
        adaln = self.conditioning(t, pooled, x.dtype)
        cap = self.caption(cap_feats.to(x.dtype), rope.slice(0, n_cap), cap_mask)
        img = self.image(self.patchify(x), rope.slice(n_cap, None), adaln)
        # Joint sequence [caption (padded) | image]: padding keys are masked, and image positions start at
        # each sample's valid caption length, so this equals the reference's packed [valid caption | image]
        # layout.
        joint_mask = None
        if cap_mask is not None:
            joint_mask = torch.cat([cap_mask, cap_mask.new_ones(b, img.shape[1])], dim=1)
        if cache is not None:
            cache.now = t  # the time a first-order step cache extrapolates in
        joint = self.joint(torch.cat([cap, img], dim=1), rope, joint_mask, adaln, cache)
        return self.unpatchify(self.final_layer(joint[:, n_cap:], adaln), h, w)

    def default_rope(self, x: Tensor, cap_feats: Tensor, cap_mask: Tensor | None) -> Rope:
        """The tables when the caller built none (the samplers build them once per request)."""
        b, n_cap, p = x.shape[0], cap_feats.shape[1], self.cfg.patch_size
        cap_len = cap_mask.sum(1) if cap_mask is not None else torch.full((b,), n_cap, device=x.device)
        return self.rope(cap_len, n_cap, x.shape[2] // p, x.shape[3] // p)

    def conditioning(self, t: Tensor, pooled: Tensor, dtype: torch.dtype) -> Tensor:
        """The (B, adaln_dim) vector that modulates every block: time and the pooled caption."""
        t_emb = self.t_embedder(t.to(dtype))
        clip_emb = self.clip_text_pooled_proj(pooled.to(dtype))
        return self.time_text_embed(torch.cat([t_emb, clip_emb], dim=-1))

    def caption(self, cap_feats: Tensor, rope: Rope, cap_mask: Tensor | None) -> Tensor:
        """Caption features -> tokens through the context refiner (rope: the caption's tables)."""
        cap = self.cap_embedder(cap_feats)
        if self.length_generic:
            _length_generic(cap, rope.cos, rope.sin, cap_mask)
        for block in self.context_refiner:
            cap = block(cap, rope, cap_mask)
        return cap

    def image(self, patches: Tensor, rope: Rope, adaln: Tensor) -> Tensor:
        """Patches -> tokens through the noise refiner (rope: the image's tables)."""
        img = self.x_embedder(patches)
        for block in self.noise_refiner:
            img = block(img, rope, None, adaln)
        return img

    def joint(
        self, joint: Tensor, rope: Rope, mask: Tensor | None, adaln: Tensor, cache: StepCache | None = None
    ) -> Tensor:
        """The joint layers over [caption | image]; with a step cache, the deep layers may be skipped."""
        if self.length_generic:
            _length_generic(joint, rope.cos, rope.sin, mask)
        if cache is not None:
            return self._cached_layers(joint, rope, mask, adaln, cache)
        for block in self.layers:
            joint = block(joint, rope, mask, adaln)
        return joint

    def _cached_layers(
        self, joint: Tensor, rope: Rope, mask: Tensor | None, adaln: Tensor, cache: StepCache
    ) -> Tensor:
        first = self.layers[0](joint, rope, mask, adaln)
        first_residual = first - joint
        cache.calls += 1
        # the last `cache.last` layers run on every call: they correct the reused middle (DBCache's Bn)
        tail = len(self.layers) - min(cache.last, len(self.layers) - 1)
        shard = rope.shard  # sequence parallel: every rank must take the same branch
        if cache.usable(first_residual) if shard is None else shard.cache_usable(cache, first_residual):
            cache.hits += 1
            out = first + cache.reused()
        else:
            out = first
            for block in self.layers[1:tail]:
                out = block(out, rope, mask, adaln)
            cache.store(first_residual, out - first)
        for block in self.layers[tail:]:
            out = block(out, rope, mask, adaln)
        return out


def _length_generic(*tensors: Tensor | None) -> None:
    """Mark the sequence dim (1) of a compiled block's inputs dynamic before its first call. The caption's
    length changes with every prompt; unmarked, dynamo first specializes each block family to the first length
    it sees and only recompiles a length-generic graph at the second, so a compile's warm-up had to run two
    prompts and trace those families twice. A length of 1 stays specialized (dynamo's rule for sizes 0 and 1)."""
    import torch._dynamo  # only reached with compiled blocks: an eager run never imports dynamo

    for t in tensors:
        if t is not None and t.shape[1] > 1:
            torch._dynamo.maybe_mark_dynamic(t, 1)


class _TimestepEmbedder(nn.Module):
    def __init__(self, out_dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, t: Tensor) -> Tensor:
        emb = timestep_embedding(t, self.freq_dim)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))

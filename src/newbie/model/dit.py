"""NextDiT_CLIP, the NewBie image Exp0.1 transformer (spec §2).

Module names equal the official checkpoint keys, so its state dict loads with no mapping.
Time convention here is the official one: t = 0 is noise, t = 1 is data, output = velocity (data - noise).
The samplers use sigma (1 = noise); `newbie.sampling.guidance` converts at the model edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from newbie.config import DiTConfig
from newbie.model.math import (
    apply_rope,
    attention,
    rms_norm,
    rope_angles,
    rope_inv_freqs,
    segmented,
    timestep_embedding,
)
from newbie.model.step_cache import StepCache

if TYPE_CHECKING:
    from newbie.parallel.sequence import SequenceGroup, Shard


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)


@dataclass
class Rope:
    """Per-request RoPE tables, built once outside forward (no host syncs inside the network)."""

    cos: Tensor  # (B, N, head_dim/2)
    sin: Tensor
    shard: Shard | None = None  # sequence parallelism: how the tokens these tables cover are spread
    # Packed CFG: token counts of the sequences laid side by side in each row (cond, uncond). Attention stays
    # inside each; modulation is per sequence. None: one sequence per row.
    segments: tuple[int, ...] | None = None

    def slice(self, start: int, stop: int) -> Rope:
        # copies, not views: a view's storage offset and its batch stride (the parent's length) are guards of
        # the compiled blocks, so the image part of the tables would otherwise get graphs of its own
        # (.contiguous() keeps such a view: a size-1 batch dim counts as contiguous whatever its stride)
        return Rope(
            *(t[:, start:stop].clone(memory_format=torch.contiguous_format) for t in (self.cos, self.sin))
        )

    @staticmethod
    def packed(ropes: list[Rope]) -> Rope:
        """Several sequences' tables laid side by side along the tokens, remembering where each starts."""
        return Rope(
            torch.cat([r.cos for r in ropes], dim=1),
            torch.cat([r.sin for r in ropes], dim=1),
            segments=tuple(r.cos.shape[1] for r in ropes),
        )


def per_token(mod: Tensor, segments: tuple[int, ...] | None) -> Tensor:
    """A per-sequence vector broadcast over its tokens: (B, A) -> (B, 1, A); packed (B, S, A) -> (B, L, A),
    row s on the tokens of segment s (compiled, this fuses into the consumer and is never materialised)."""
    if segments is None:
        return mod[:, None]
    return torch.cat([mod[:, i, None].expand(-1, n, -1) for i, n in enumerate(segments)], dim=1)


class Attention(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.dim, (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim, bias=False)
        self.out = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.qk_norm_eps)
        self.k_norm = RMSNorm(cfg.head_dim, cfg.qk_norm_eps)

    def forward(self, x: Tensor, rope: Rope, key_mask: Tensor | None) -> Tensor:
        q_size, kv_size = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        q, k, v = self.qkv(x).split([q_size, kv_size, kv_size], dim=-1)
        q = q.unflatten(-1, (self.n_heads, self.head_dim))  # (B, N, Hq, D)
        k = k.unflatten(-1, (self.n_kv_heads, self.head_dim))  # (B, N, Hkv, D)
        v = v.unflatten(-1, (self.n_kv_heads, self.head_dim))
        q = apply_rope(self.q_norm(q), rope.cos, rope.sin)
        k = apply_rope(self.k_norm(k), rope.cos, rope.sin)
        if rope.shard is not None:  # sequence parallel: all-to-all, attention over every token, all-to-all
            return self.out(rope.shard.attention(q, k, v, key_mask))
        if rope.segments is not None:  # packed CFG branches: each attends only to itself
            return self.out(segmented(attention, q, k, v, rope.segments))
        return self.out(attention(q, k, v, key_mask))


class FeedForward(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_hidden, bias=False)
        self.w2 = nn.Linear(cfg.ffn_hidden, cfg.dim, bias=False)
        self.w3 = nn.Linear(cfg.dim, cfg.ffn_hidden, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(nn.functional.silu(self.w1(x)) * self.w3(x))  # SwiGLU


class Block(nn.Module):
    """Sandwich-norm block; modulated blocks scale by (1 + scale) and gate with tanh (no shift terms)."""

    def __init__(self, cfg: DiTConfig, modulated: bool):
        super().__init__()
        self.modulated = modulated
        self.clamp_fp16 = False  # set by the fp16 guard after an overflow
        self.attention = Attention(cfg)
        self.feed_forward = FeedForward(cfg)
        self.attention_norm1 = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention_norm2 = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn_norm1 = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn_norm2 = RMSNorm(cfg.dim, cfg.norm_eps)
        if modulated:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cfg.adaln_dim, 4 * cfg.dim))

    def _fit(self, h: Tensor) -> Tensor:
        # fp16 guard: keep attention/FFN outputs inside the fp16 range (the sandwich norm follows)
        return torch.nan_to_num(h, nan=0.0, posinf=65504.0, neginf=-65504.0) if self.clamp_fp16 else h

    def forward(self, x: Tensor, rope: Rope, key_mask: Tensor | None, adaln: Tensor | None = None) -> Tensor:
        if not self.modulated:
            x = x + self.attention_norm2(self._fit(self.attention(self.attention_norm1(x), rope, key_mask)))
            return x + self.ffn_norm2(self._fit(self.feed_forward(self.ffn_norm1(x))))
        mod = per_token(self.adaLN_modulation(adaln), rope.segments)
        scale_msa, gate_msa, scale_mlp, gate_mlp = mod.chunk(4, dim=-1)
        h = self._fit(self.attention(self.attention_norm1(x) * (1 + scale_msa), rope, key_mask))
        x = x + gate_msa.tanh() * self.attention_norm2(h)
        h = self._fit(self.feed_forward(self.ffn_norm1(x) * (1 + scale_mlp)))
        return x + gate_mlp.tanh() * self.ffn_norm2(h)


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
        self.noise_refiner = nn.ModuleList([Block(cfg, modulated=True) for _ in range(cfg.n_refiner_layers)])
        self.context_refiner = nn.ModuleList(
            [Block(cfg, modulated=False) for _ in range(cfg.n_refiner_layers)]
        )
        self.layers = nn.ModuleList([Block(cfg, modulated=True) for _ in range(cfg.n_layers)])
        self.final_layer = FinalLayer(cfg)
        self.sequence_parallel: SequenceGroup | None = (
            None  # set once per process; see newbie.parallel.sequence
        )
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

    # -- forward --

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
        p = self.cfg.patch_size
        n_cap = cap_feats.shape[1]
        if rope is None:
            cap_len = cap_mask.sum(1) if cap_mask is not None else torch.full((b,), n_cap, device=x.device)
            rope = self.rope(cap_len, n_cap, h // p, w // p)

        if rope.segments is not None:
            return self._packed_forward(x, t, cap_feats, pooled, rope)
        t_emb = self.t_embedder(t.to(x.dtype))
        clip_emb = self.clip_text_pooled_proj(pooled.to(x.dtype))
        adaln = self.time_text_embed(torch.cat([t_emb, clip_emb], dim=-1))  # (B, adaln_dim)
        if self.sequence_parallel is not None:
            return self._sequence_parallel_forward(x, cap_feats, cap_mask, rope, adaln, cache)

        cap_rope, img_rope = rope.slice(0, n_cap), rope.slice(n_cap, None)
        cap = self.cap_embedder(cap_feats.to(x.dtype))
        for block in self.context_refiner:
            cap = block(cap, cap_rope, cap_mask)

        img = self.x_embedder(self.patchify(x))
        for block in self.noise_refiner:
            img = block(img, img_rope, None, adaln)

        # Joint sequence [caption (padded) | image]: padding keys are masked, and image positions start at
        # each sample's valid caption length, so this equals the reference's packed [valid caption | image]
        # layout.
        joint = torch.cat([cap, img], dim=1)
        joint_mask = None
        if cap_mask is not None:
            joint_mask = torch.cat([cap_mask, cap_mask.new_ones(b, img.shape[1])], dim=1)
        joint = self._joint_layers(joint, rope, joint_mask, adaln, cache)

        out = self.final_layer(joint[:, n_cap:], adaln)
        return self.unpatchify(out, h, w)

    def _packed_forward(self, x: Tensor, t: Tensor, cap_feats: Tensor, pooled: Tensor, rope: Rope) -> Tensor:
        """Several CFG branches of the same latent in one forward, their tokens side by side in each row:
        [caption 0 | image 0 | caption 1 | image 1 ...], as `rope.segments` says (Rope.packed). Every linear
        then runs once over all of them (larger, faster GEMMs, half the launches), while attention stays
        within each branch and each branch is modulated by its own pooled caption. Equal to one forward per
        branch (tests/model/test_packed.py).

        cap_feats: (B, sum of caption lengths, F), unpadded; pooled: (B, branches, clip_text_dim).
        Returns (branches * B, C, H, W): branch 0's batch first, as torch.cat of the separate outputs."""
        b, _, h, w = x.shape
        p = self.cfg.patch_size
        n_img = (h // p) * (w // p)
        segments = rope.segments
        branches = len(segments)
        cap_lens = [n - n_img for n in segments]
        seg_starts = [sum(segments[:i]) for i in range(branches)]

        t_emb = self.t_embedder(t.to(x.dtype))[:, None].expand(-1, branches, -1)
        clip_emb = self.clip_text_pooled_proj(pooled.to(x.dtype))
        adaln = self.time_text_embed(torch.cat([t_emb, clip_emb], dim=-1))  # (B, branches, adaln_dim)

        def tables(pieces: list[tuple[int, int]]) -> Rope:
            return Rope.packed([rope.slice(a, z) for a, z in pieces])

        cap_rope = tables([(s, s + n) for s, n in zip(seg_starts, cap_lens)])
        img_rope = tables([(s + n, s + seg) for s, n, seg in zip(seg_starts, cap_lens, segments)])
        cap = self.cap_embedder(cap_feats.to(x.dtype))
        for block in self.context_refiner:
            cap = block(cap, cap_rope, None)
        img = self.x_embedder(self.patchify(x)).repeat(1, branches, 1)
        for block in self.noise_refiner:
            img = block(img, img_rope, None, adaln)

        caps = cap.split(cap_lens, dim=1)
        imgs = img.split(n_img, dim=1)
        joint = torch.cat([piece for pair in zip(caps, imgs) for piece in pair], dim=1)
        joint = self._joint_layers(joint, rope, None, adaln, None)
        outs = [
            self.final_layer(joint[:, s + n : s + seg], adaln[:, i])
            for i, (s, n, seg) in enumerate(zip(seg_starts, cap_lens, segments))
        ]
        return self.unpatchify(torch.cat(outs), h, w)

    def _sequence_parallel_forward(
        self,
        x: Tensor,
        cap_feats: Tensor,
        cap_mask: Tensor | None,
        rope: Rope,
        adaln: Tensor,
        cache: StepCache | None,
    ) -> Tensor:
        """Every block on this rank's share of the tokens (newbie.parallel.sequence): the context refiner on a
        slice of the caption, the noise refiner on a slice of the image, the joint layers on the two slices
        together, the final layer on the image slice; then every rank's image tokens gathered. Key masks
        stay whole: attention sees every token."""
        sp = self.sequence_parallel
        h, w = x.shape[2:]
        n_cap = cap_feats.shape[1]
        patches = self.patchify(x)
        cap_shard, img_shard = sp.split(n_cap), sp.split(patches.shape[1])
        c0, c1, i0, i1 = cap_shard.start, cap_shard.stop, img_shard.start, img_shard.stop
        cap = self.cap_embedder(cap_feats[:, c0:c1].to(x.dtype))
        cap_rope = Rope(rope.cos[:, c0:c1], rope.sin[:, c0:c1], cap_shard)
        for block in self.context_refiner:
            cap = block(cap, cap_rope, cap_mask)
        img = self.x_embedder(patches[:, i0:i1])
        img_rope = Rope(rope.cos[:, n_cap + i0 : n_cap + i1], rope.sin[:, n_cap + i0 : n_cap + i1], img_shard)
        for block in self.noise_refiner:
            img = block(img, img_rope, None, adaln)

        joint_shard = sp.joint(cap_shard, img_shard)  # [my caption slice | my image slice]
        joint = torch.cat([cap, img], dim=1)
        cos = torch.cat([cap_rope.cos, img_rope.cos], dim=1)
        joint_rope = Rope(cos, torch.cat([cap_rope.sin, img_rope.sin], dim=1), joint_shard)
        mask = sp.joint_mask(cap_mask, cap_shard, img_shard)
        joint = self._joint_layers(joint, joint_rope, mask, adaln, cache)
        out = self.final_layer(joint[:, c1 - c0 :], adaln)
        return self.unpatchify(img_shard.gather(out), h, w)

    def _joint_layers(
        self, joint: Tensor, rope: Rope, mask: Tensor | None, adaln: Tensor, cache: StepCache | None
    ) -> Tensor:
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
        shard = rope.shard  # sequence parallel: every rank must take the same branch
        if cache.usable(first_residual) if shard is None else shard.cache_usable(cache, first_residual):
            cache.hits += 1
            return first + cache.rest
        out = first
        for block in self.layers[1:]:
            out = block(out, rope, mask, adaln)
        cache.prev_first, cache.rest = first_residual, out - first
        return out


class _TimestepEmbedder(nn.Module):
    def __init__(self, out_dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, t: Tensor) -> Tensor:
        emb = timestep_embedding(t, self.freq_dim)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))

"""Ulysses sequence parallelism for the DiT: its refiners and joint [caption | image] layers.

Set once per process: `shard_model(dit, SequenceGroup(group, rank, world))` makes dit(...) run the model's own
stages (NextDiT.conditioning, caption, image, joint, final_layer) on this rank's tokens. Each rank keeps a contiguous slice of the caption tokens
through the context refiner, a contiguous slice of the image tokens through the noise refiner, the two slices
together through the 36 joint layers (`SequenceGroup.joint`) and its image slice through the final layer, with
the RoPE tables sliced the same way: nothing is computed twice. Around each attention, two all-to-alls
re-distribute the tensors: before it every rank holds all heads of its tokens, inside it all tokens of its
heads (Hq/sp query and Hkv/sp key-value heads, so grouped-query attention keeps its grouping), after it again
all heads of its tokens. Everything else (norms, FFN, modulation, final layer) is per token.

Shards need not be equal: the lengths are whatever the caption and the image make them, so shard sizes differ
by at most one token (a rank may hold no caption token at all) and the all-to-alls carry the exact sizes
(no padding, no mask, nothing approximated).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from newbie.errors import NewbieError
from newbie.model.dit import NextDiT, Rope
from newbie.model.math import attention
from newbie.model.step_cache import StepCache


def shard_sizes(n: int, world: int) -> list[int]:
    """Token counts of the `world` contiguous shards of a length-n sequence (the first n % world get one
    more)."""
    base, extra = divmod(n, world)
    return [base + (1 if r < extra else 0) for r in range(world)]


def all_gather_uneven(x: Tensor, sizes: list[int], dim: int, group) -> Tensor:
    """Concatenate along `dim` every rank's x, rank r's holding sizes[r] entries there: all_gather needs equal
    shapes, so each part is padded to the largest and trimmed after."""
    pad = max(sizes) - x.shape[dim]
    if pad:
        shape = list(x.shape)
        shape[dim] = pad
        x = torch.cat([x, x.new_zeros(shape)], dim=dim)
    parts = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat([p.narrow(dim, 0, n) for p, n in zip(parts, sizes)], dim=dim)


def check_heads(n_heads: int, n_kv_heads: int, sp: int) -> None:
    """sp must split both head counts evenly (each rank attends with whole query groups)."""
    if sp < 1 or n_kv_heads % sp or n_heads % sp:
        raise NewbieError(
            f"sequence-parallel degree {sp} must divide the model's {n_kv_heads} key-value heads "
            f"(and its {n_heads} query heads): use sp in "
            f"{', '.join(str(d) for d in range(1, n_kv_heads + 1) if not n_kv_heads % d and not n_heads % d)}"
        )


@dataclass(frozen=True)
class SequenceGroup:
    """The processes that share one DiT forward. group: a torch.distributed process group (None = the default
    group); rank/world: this process's place in it."""

    group: object
    rank: int
    world: int

    def split(self, n: int) -> Shard:
        """Contiguous slices of a length-n sequence, one per rank."""
        return Shard(self, tuple(shard_sizes(n, self.world)))

    def joint(self, cap: Shard, img: Shard) -> Shard:
        """The joint layers' shard: each rank's caption slice followed by its image slice. Attention does not
        depend on the order of the tokens (their RoPE tables and key-mask entries travel with them), so the
        rank-ordered [caption_r | image_r] pieces, a permutation of [caption | image], give the same result
        and no token moves between the refiners and the joint layers."""
        return Shard(self, tuple(c + i for c, i in zip(cap.sizes, img.sizes)))

    def joint_mask(self, cap_mask: Tensor | None, cap: Shard, img: Shard) -> Tensor | None:
        """The whole joint key mask in the order the all-to-all gathers the joint tokens."""
        if cap_mask is None:
            return None
        parts, start = [], 0
        for n_cap, n_img in zip(cap.sizes, img.sizes):
            parts += [cap_mask[:, start : start + n_cap], cap_mask.new_ones(cap_mask.shape[0], n_img)]
            start += n_cap
        return torch.cat(parts, dim=1)


@dataclass(frozen=True)
class Shard:
    """This process's slice of one length-n sequence: carried by the sliced Rope, so Attention finds it."""

    sp: SequenceGroup
    sizes: tuple[int, ...]

    @property
    def start(self) -> int:
        return sum(self.sizes[: self.sp.rank])

    @property
    def stop(self) -> int:
        return self.start + self.sizes[self.sp.rank]

    # -- attention --

    def attention(
        self, q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, backend: str = "auto"
    ) -> Tensor:
        """Ulysses attention (`backend`: Attention.backend, for the attention over every token). q: (B, n_mine, Hq, D), k/v: (B, n_mine, Hkv, D) for this rank's tokens (RoPE
        already applied); key_mask: (B, N) over the FULL sequence or None. Returns (B, n_mine, Hq*D)."""
        world = self.sp.world
        b, n_mine, hq, d = q.shape
        hkv = k.shape[2]
        # rank j gets query heads [j*hq/w, (j+1)*hq/w) and kv heads [j*hkv/w, ...): query head h reads kv head
        # h // (hq/hkv), and since hq/w = (hq/hkv) * (hkv/w) that mapping stays local to each rank
        qs, ks = hq // world, hkv // world
        heads = qs + 2 * ks
        # packed in one pass (each element read and written once): (world, n_mine, B, heads, D), chunk j for
        # rank j holding its query heads, then its key heads, then its value heads
        send = q.new_empty(world, n_mine, b, heads, d)
        for t, lo, per in ((q, 0, qs), (k, qs, ks), (v, qs + ks, ks)):
            send[:, :, :, lo : lo + per] = t.view(b, n_mine, world, per, d).permute(2, 1, 0, 3, 4)
        recv = send.new_empty(sum(self.sizes), b, heads, d)  # (N, B, heads, D), shards in rank order
        send = send.view(world * n_mine, b, heads, d)
        dist.all_to_all_single(recv, send, self.sizes, [n_mine] * world, group=self.sp.group)
        full = recv.permute(1, 0, 2, 3)  # (B, N, heads, D)
        qf, kf, vf = full.split([qs, ks, ks], dim=2)
        out = attention(qf, kf, vf, key_mask, backend).view(
            b, -1, qs, d
        )  # (B, N, qs, D): all tokens, my heads
        back = out.permute(1, 0, 2, 3).contiguous()  # (N, B, qs, D): token shard i goes back to rank i
        mine = back.new_empty(world * n_mine, b, qs, d)
        dist.all_to_all_single(mine, back, [n_mine] * world, self.sizes, group=self.sp.group)
        # (world, n_mine, B, qs, D): chunk j holds head group j -> (B, n_mine, Hq*D) in head order
        return mine.view(world, n_mine, b, qs, d).permute(2, 1, 0, 3, 4).reshape(b, n_mine, hq * d)

    # -- the end of the forward --

    def gather(self, x: Tensor) -> Tensor:
        """Every rank's x (this shard's tokens, dim 1) concatenated in rank order: the whole sequence."""
        return all_gather_uneven(x, list(self.sizes), 1, self.sp.group)

    def cache_usable(self, cache, first_residual: Tensor) -> bool:
        """StepCache.usable over the whole sequence: every rank must take the same branch (the skipped layers
        hold collectives), so the relative L1 change is summed over all shards before the comparison."""
        ref = cache.reference(first_residual)  # None the same on every rank: all start a request together
        if ref is None:
            return cache.decide(first_residual, None)
        sums = torch.stack([(first_residual - ref).abs().sum(), ref.abs().sum()]).float()
        dist.all_reduce(sums, group=self.sp.group)
        count = sum(self.sizes) * first_residual.shape[0] * first_residual.shape[-1]
        change = sums[0] / sums[1].clamp(min=1e-12 * count)  # ratio of sums = ratio of means
        return cache.decide(first_residual, float(change))


# -- the model's forward on shards --


class ShardedForward:
    """dit(...) under sequence parallelism (an instance attribute of the model, as `shard_model` sets it):
    the context refiner on a slice of the caption, the noise refiner on a slice of the image, the joint layers
    on the two slices together, the final layer on the image slice; then every rank's image tokens gathered.
    Key masks stay whole: attention sees every token."""

    def __init__(self, dit: NextDiT, sp: SequenceGroup):
        self.dit, self.sp = dit, sp

    def __call__(
        self,
        x: Tensor,
        t: Tensor,
        cap_feats: Tensor,
        cap_mask: Tensor | None,
        pooled: Tensor,
        rope: Rope | None = None,
        cache: StepCache | None = None,
    ) -> Tensor:
        dit, sp = self.dit, self.sp
        h, w = x.shape[2:]
        n_cap = cap_feats.shape[1]
        if rope is None:
            rope = dit.default_rope(x, cap_feats, cap_mask)
        adaln = dit.conditioning(t, pooled, x.dtype)
        patches = dit.patchify(x)
        cap_shard, img_shard = sp.split(n_cap), sp.split(patches.shape[1])
        c0, c1, i0, i1 = cap_shard.start, cap_shard.stop, img_shard.start, img_shard.stop
        cap_rope = Rope(rope.cos[:, c0:c1], rope.sin[:, c0:c1], cap_shard)
        cap = dit.caption(cap_feats[:, c0:c1].to(x.dtype), cap_rope, cap_mask)
        img_rope = Rope(rope.cos[:, n_cap + i0 : n_cap + i1], rope.sin[:, n_cap + i0 : n_cap + i1], img_shard)
        img = dit.image(patches[:, i0:i1], img_rope, adaln)

        joint_shard = sp.joint(cap_shard, img_shard)  # [my caption slice | my image slice]
        cos = torch.cat([cap_rope.cos, img_rope.cos], dim=1)
        joint_rope = Rope(cos, torch.cat([cap_rope.sin, img_rope.sin], dim=1), joint_shard)
        mask = sp.joint_mask(cap_mask, cap_shard, img_shard)
        if cache is not None:
            cache.now = t  # as NextDiT.forward: the time a first-order step cache extrapolates in
        joint = dit.joint(torch.cat([cap, img], dim=1), joint_rope, mask, adaln, cache)
        out = dit.final_layer(joint[:, c1 - c0 :], adaln)
        return dit.unpatchify(img_shard.gather(out), h, w)


def shard_model(dit: NextDiT, sp: SequenceGroup | None) -> None:
    """Make dit(...) this rank's part of a sequence-parallel forward (None: the one-process forward again)."""
    if sp is None:
        dit.__dict__.pop("forward", None)
    else:
        dit.forward = ShardedForward(dit, sp)

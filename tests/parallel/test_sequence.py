"""Ulysses sequence parallelism of the DiT on 2 and 3 CPU processes (gloo): the sharded forward (refiners and
joint layers) equals the one-process forward, for lengths that do not divide by the process count (down to a
rank with no caption token), with a padded caption batch (key mask), grouped-query heads, and the step cache
taking the same decisions on every rank."""

import torch

from newbie.demo.tiny import tiny_dit_config
from newbie.model.dit import NextDiT
from newbie.model.step_cache import StepCache, StepPolicy
from newbie.parallel.launch import Placement, run_group
from newbie.parallel.sequence import SequenceGroup, shard_sizes


def _model(**cfg):
    torch.manual_seed(0)
    m = NextDiT(tiny_dit_config(**cfg)).eval()
    with torch.no_grad():  # non-trivial norms and gates so every weight matters
        for p in m.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return m


@torch.no_grad()
def _forwards(rank, world, device, cfg):
    import newbie.parallel.sequence as seq

    calls = []
    attention = seq.Shard.attention
    seq.Shard.attention = lambda self, *a: calls.append(self.sizes) or attention(self, *a)
    m = _model(**cfg)
    g = torch.Generator().manual_seed(1)
    c = m.cfg
    x, t = torch.randn(2, 16, 6, 10, generator=g), torch.rand(2, generator=g)
    cap, pooled = torch.randn(2, 7, c.cap_feat_dim, generator=g), torch.randn(2, c.clip_text_dim, generator=g)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 4:] = False  # the second caption is padded: the key mask spans the whole sequence on every rank
    ref = [
        m(x, t, cap, None, pooled),
        m(x, t, cap, mask, pooled),
        m(x[:1], t[:1], cap[:1, :2], None, pooled[:1]),
    ]
    caches = [StepCache(0.5), StepCache(0.5)]
    steps_ref = [m(x * (1 + 0.01 * i), t, cap, None, pooled, cache=caches[0]) for i in range(3)]
    policy = StepPolicy(0.5, warmup=1, max_skips=1, accumulate=True)  # full, skip, full (the cap)
    acc = [StepCache.of(policy), StepCache.of(policy)]
    steps_ref += [m(x * (1 + 0.01 * i), t, cap, None, pooled, cache=acc[0]) for i in range(3)]
    seq.shard_model(m, SequenceGroup(None, rank, world))
    out = [
        m(x, t, cap, None, pooled),
        m(x, t, cap, mask, pooled),
        m(x[:1], t[:1], cap[:1, :2], None, pooled[:1]),
    ]
    steps = [m(x * (1 + 0.01 * i), t, cap, None, pooled, cache=caches[1]) for i in range(3)]
    steps += [m(x * (1 + 0.01 * i), t, cap, None, pooled, cache=acc[1]) for i in range(3)]
    return {
        "diff": max(float((a - b).abs().max()) for a, b in zip(ref + steps_ref, out + steps)),
        "hits": (caches[0].hits, caches[1].hits),
        "hits_accumulated": (acc[0].hits, acc[1].hits),
        "shards": set(calls),
    }


def _check(world, **cfg):
    res = run_group(_forwards, (cfg,), Placement.for_world(world, "cpu"), timeout_s=120)
    cap, img = shard_sizes(7, world), shard_sizes((6 // 2) * (10 // 2), world)
    joint = tuple(c + i for c, i in zip(cap, img))  # each rank: its caption slice + its image slice
    for r in res.values():
        assert {tuple(cap), tuple(img), joint, tuple(shard_sizes(2, world))} <= r["shards"]
        assert r["diff"] < 1e-5, r
        assert r["hits"][0] == r["hits"][1] > 0  # the cache skipped the same steps with and without sp
        assert r["hits_accumulated"] == (1, 1)
    assert len({r["hits"] for r in res.values()}) == 1


def test_two_ranks_equal_one_process():
    _check(2)  # 4 query / 2 key-value heads; caption 7 = 4 + 3, image 15 = 8 + 7


def test_three_ranks_uneven_shards_gqa():
    # caption 7 = 3 + 2 + 2, image 15 = 5 + 5 + 5; the 2-token caption leaves rank 2 without one
    _check(3, dim=48, n_heads=6, n_kv_heads=3, axes_dims=(4, 2, 2))

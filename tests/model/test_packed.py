"""Packed CFG (model/dit.py `_packed_forward`, sampling/guidance.py `packed_pair`): both branches' tokens in one
row give what two separate forwards give, in the reference modules and in the fast block (CPU, fp32)."""

import pytest
import torch

from newbie.demo.tiny import tiny_dit_config
from newbie.model import fused
from newbie.model.dit import NextDiT, Rope
from newbie.model.text import TextEmbeds
from newbie.sampling.guidance import cfg_model, packable


def _model():
    torch.manual_seed(int(torch.randint(0, 10_000, ())))
    m = NextDiT(tiny_dit_config()).eval()
    with torch.no_grad():  # non-trivial norms and gates so every weight matters
        for p in m.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return m


def _embeds(m, b, n):
    cfg = m.cfg
    return TextEmbeds(
        torch.randn(b, n, cfg.cap_feat_dim),
        torch.ones(b, n, dtype=torch.bool),
        torch.randn(b, cfg.clip_text_dim),
    )


def _separate(m, x, t, branches, grid):
    outs = []
    for e in branches:
        rope = m.rope(e.cap_mask.sum(1), e.cap_feats.shape[1], *grid)
        outs.append(m(x, t, e.cap_feats, None, e.pooled, rope))
    return torch.cat(outs)


def _packed(m, x, t, branches, grid):
    rope = Rope.packed([m.rope(e.cap_mask.sum(1), e.cap_feats.shape[1], *grid) for e in branches])
    feats = torch.cat([e.cap_feats for e in branches], dim=1)
    pooled = torch.stack([e.pooled for e in branches], dim=1)
    return m(x, t, feats, None, pooled, rope)


@torch.no_grad()
@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("batch", [1, 2])
def test_packed_forward_equals_separate_forwards(fast, batch):
    m = _model()
    if fast:
        fused.enable(m, "math")
    h, w = 8, 12
    grid = (h // 2, w // 2)
    x, t = torch.randn(batch, 16, h, w), torch.rand(batch)
    branches = [_embeds(m, batch, 11), _embeds(m, batch, 4)]  # different caption lengths, as cond/uncond
    ref = _separate(m, x, t, branches, grid)
    out = _packed(m, x, t, branches, grid)
    assert out.shape == ref.shape == (2 * batch, 16, h, w)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # a third branch packs too (the layout is general, not only a CFG pair)
    three = [*branches, _embeds(m, batch, 7)]
    torch.testing.assert_close(
        _packed(m, x, t, three, grid), _separate(m, x, t, three, grid), rtol=1e-5, atol=1e-5
    )


@torch.no_grad()
def test_packed_attention_does_not_leak_between_branches():
    """Changing the uncond caption must not move the cond output (attention stays inside each segment)."""
    m = _model()
    x, t = torch.randn(1, 16, 8, 8), torch.rand(1)
    cond = _embeds(m, 1, 6)
    a = _packed(m, x, t, [cond, _embeds(m, 1, 5)], (4, 4))[:1]
    b = _packed(m, x, t, [cond, _embeds(m, 1, 5)], (4, 4))[:1]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_cfg_model_packed_equals_split():
    m = _model()
    cond, uncond = _embeds(m, 2, 9), _embeds(m, 2, 3)
    x = torch.randn(2, 16, 8, 8)
    args = (m, cond, uncond, (4, 4), torch.device("cpu"), torch.float32, 4.5)
    split, _ = cfg_model(*args, batching="split")
    packed, _ = cfg_model(*args, batching="packed")
    torch.testing.assert_close(packed(x, 0.6), split(x, 0.6), rtol=1e-5, atol=1e-5)
    # after the CFG cut-off only the cond branch runs, the same in both
    split_t, _ = cfg_model(*args, cfg_trunc=0.25, batching="split")
    packed_t, _ = cfg_model(*args, cfg_trunc=0.25, batching="packed")
    torch.testing.assert_close(packed_t(x, 0.2), split_t(x, 0.2), rtol=0, atol=0)


def test_packing_falls_back_where_it_cannot_apply():
    m = _model()
    cond, uncond = _embeds(m, 2, 9), _embeds(m, 2, 3)
    assert packable(m, cond, uncond, [None, None])
    assert not packable(m, cond, uncond, [object(), object()])  # step caches decide per branch
    ragged = _embeds(m, 2, 9)
    ragged.cap_mask[1, 6:] = False  # two prompts of different lengths in one batch: padding needs a mask
    assert not packable(m, ragged, uncond, [None, None])
    # and cfg_model then still runs (split), equal to the batched, masked reference
    x = torch.randn(2, 16, 8, 8)
    args = (m, ragged, uncond, (4, 4), torch.device("cpu"), torch.float32, 3.0)
    with torch.no_grad():
        torch.testing.assert_close(
            cfg_model(*args, batching="packed")[0](x, 0.5),
            cfg_model(*args, batching="batched")[0](x, 0.5),
            rtol=1e-5,
            atol=1e-5,
        )

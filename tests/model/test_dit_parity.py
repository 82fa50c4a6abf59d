"""Our NextDiT against diffusers' Lumina2Transformer2DModel with weights mapped per spec §1.3 (fp32)."""

import torch

from newbie.bench.speed_peers import lumina2_state_dict
from newbie.demo.tiny import tiny_dit_config
from newbie.model.dit import NextDiT


@torch.no_grad()
def test_matches_diffusers_lumina2():
    from newbie.bench.speed import lumina2_like

    cfg = tiny_dit_config(axes_lens=(64, 32, 32))
    torch.manual_seed(0)
    ours = NextDiT(cfg).eval()
    for p in ours.parameters():
        p.add_(0.05 * torch.randn_like(p))
    theirs = lumina2_like(cfg, sample_size=16).eval()
    missing, unexpected = theirs.load_state_dict(lumina2_state_dict(ours.state_dict(), cfg), strict=False)
    assert not unexpected and not missing

    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 16, 8, 10, generator=g)
    t = torch.rand(2, generator=g)
    cap = torch.randn(2, 9, cfg.cap_feat_dim, generator=g)
    pooled = torch.randn(2, cfg.clip_text_dim, generator=g)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False

    # diffusers has no Jina pooled path: give it our time+pooled conditioning vector as its temb.
    adaln = ours.time_text_embed(torch.cat([ours.t_embedder(t), ours.clip_text_pooled_proj(pooled)], -1))
    embed = theirs.time_caption_embed
    embed.forward = lambda hs, ts, ehs: (adaln, embed.caption_embedder(ehs))

    ref = theirs(x, t, cap, mask, return_dict=False)[0]
    out = ours(x, t, cap, mask, pooled)
    rel = ((out - ref).norm() / ref.norm()).item()
    assert rel <= 1e-5, rel
    # and the per-sample maximum relative error
    assert ((out - ref).abs().max() / ref.abs().max()).item() <= 1e-5

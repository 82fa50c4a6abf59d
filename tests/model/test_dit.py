import pytest
import torch

from newbie.demo.tiny import tiny_dit_config
from newbie.model.dit import NextDiT


def _model(seed=0, **cfg):
    torch.manual_seed(seed)
    m = NextDiT(tiny_dit_config(**cfg)).eval()
    with torch.no_grad():  # non-trivial norms and gates so every weight matters
        for name, p in m.named_parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return m


def _inputs(b=2, L=10, h=8, w=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    cfg = tiny_dit_config()
    return (torch.randn(b, 16, h, w, generator=g), torch.rand(b, generator=g),
            torch.randn(b, L, cfg.cap_feat_dim, generator=g), torch.randn(b, cfg.clip_text_dim, generator=g))


def test_output_shape_and_patchify_roundtrip():
    m = _model()
    x, t, cap, pooled = _inputs()
    out = m(x, t, cap, None, pooled)
    assert out.shape == x.shape
    assert torch.equal(m.unpatchify(m.patchify(x), 8, 12), x)
    # patch vector order is (py, px, c) with c fastest
    assert torch.equal(m.patchify(x)[0, 0, :16], x[0, :, 0, 0])
    assert torch.equal(m.patchify(x)[0, 0, 16:32], x[0, :, 0, 1])


@torch.no_grad()
def test_caption_padding_changes_nothing():
    m = _model()
    x, t, cap, pooled = _inputs(b=1, L=7)
    ref = m(x, t, cap, None, pooled)
    padded = torch.cat([cap, torch.randn(1, 9, cap.shape[-1]) * 50], dim=1)  # garbage in the padding
    mask = torch.zeros(1, 16, dtype=torch.bool)
    mask[:, :7] = True
    out = m(x, t, padded, mask, pooled)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_batch_of_two_equals_two_batches_of_one():
    m = _model()
    x, t, cap, pooled = _inputs(b=2, L=12)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 5:] = False  # the second caption is shorter
    both = m(x, t, cap, mask, pooled)
    a = m(x[:1], t[:1], cap[:1], None, pooled[:1])
    b = m(x[1:], t[1:], cap[1:, :5], None, pooled[1:])
    torch.testing.assert_close(both[:1], a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(both[1:], b, rtol=1e-5, atol=1e-5)


def test_config_invariants_are_checked():
    with pytest.raises(ValueError, match="axes_dims"):
        tiny_dit_config(axes_dims=(4, 4, 2))
    with pytest.raises(ValueError, match="n_kv_heads"):
        tiny_dit_config(n_kv_heads=3)


def test_real_size_key_count_and_params():
    from newbie.config import DiTConfig

    with torch.device("meta"):
        m = NextDiT(DiTConfig())
    sd = m.state_dict()
    # spec §2.6: 535 tensors incl. the unused norm_final, 3,486,636,096 parameters incl. its 2304
    assert len(sd) == 534
    assert sum(v.numel() for v in sd.values()) == 3_486_636_096 - 2304
    assert sd["layers.0.attention.qkv.weight"].shape == (3840, 2304)
    assert sd["layers.35.feed_forward.w1.weight"].shape == (9216, 2304)
    assert sd["time_text_embed.1.weight"].shape == (1024, 2048)
    assert sd["final_layer.linear.weight"].shape == (64, 2304)

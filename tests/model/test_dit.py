import pytest
import torch

from newbie.demo.tiny import tiny_dit_config
from newbie.model.dit import NextDiT


def _model(seed=0, **cfg):
    torch.manual_seed(seed)
    m = NextDiT(tiny_dit_config(**cfg)).eval()
    with torch.no_grad():  # non-trivial norms and gates so every weight matters
        for p in m.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return m


def _inputs(b=2, L=10, h=8, w=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    cfg = tiny_dit_config()
    return (
        torch.randn(b, 16, h, w, generator=g),
        torch.rand(b, generator=g),
        torch.randn(b, L, cfg.cap_feat_dim, generator=g),
        torch.randn(b, cfg.clip_text_dim, generator=g),
    )


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
    assert sd["clip_text_pooled_proj.1.weight"].shape == (1024, 1024)
    assert sd["final_layer.linear.weight"].shape == (64, 2304)


@torch.no_grad()
def test_pooled_path_is_the_official_one_by_hand():
    """Spec §2.3 computed by hand on a width where adaln (48) != clip_text_dim (32): RMSNorm ->
    Linear(32->32) -> cat[t_emb, clip_emb] -> SiLU -> Linear(48+32 -> 48), fed to every modulated block and
    the final layer."""
    import math

    m = _model()
    x, t, cap, pooled = _inputs(b=2, L=6)
    seen = []
    hooks = [blk.register_forward_pre_hook(lambda mod, args: seen.append(args[3])) for blk in m.noise_refiner]
    hooks.append(m.final_layer.register_forward_pre_hook(lambda mod, args: seen.append(args[1])))
    m(x, t, cap, None, pooled)
    for h in hooks:
        h.remove()

    sd = m.state_dict()
    eps = m.cfg.qk_norm_eps
    freqs = torch.tensor([math.exp(-math.log(10000.0) * i / 128) for i in range(128)])
    sinus = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=-1)  # cos first
    h1 = sinus @ sd["t_embedder.mlp.0.weight"].T + sd["t_embedder.mlp.0.bias"]
    t_emb = (h1 * torch.sigmoid(h1)) @ sd["t_embedder.mlp.2.weight"].T + sd["t_embedder.mlp.2.bias"]
    normed = pooled / torch.sqrt((pooled**2).mean(-1, keepdim=True) + eps)
    normed = normed * sd["clip_text_pooled_proj.0.weight"]
    clip_emb = normed @ sd["clip_text_pooled_proj.1.weight"].T + sd["clip_text_pooled_proj.1.bias"]
    assert clip_emb.shape == (2, 32)
    both = torch.cat([t_emb, clip_emb], dim=-1)
    want = (both * torch.sigmoid(both)) @ sd["time_text_embed.1.weight"].T + sd["time_text_embed.1.bias"]
    assert sd["time_text_embed.1.weight"].shape == (48, 48 + 32)
    assert len(seen) == len(m.noise_refiner) + 1
    for got in seen:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # the pooled feature reaches the output
    assert not torch.allclose(m(x, t, cap, None, pooled), m(x, t, cap, None, pooled.flip(0)))


def test_pooled_path_shapes_follow_the_official_formula():
    with torch.device("meta"):
        sd = NextDiT(tiny_dit_config(dim=96, n_heads=8, n_kv_heads=4, clip_text_dim=32)).state_dict()
    assert sd["clip_text_pooled_proj.0.weight"].shape == (32,)
    assert sd["clip_text_pooled_proj.1.weight"].shape == (32, 32)
    assert sd["clip_text_pooled_proj.1.bias"].shape == (32,)
    assert sd["time_text_embed.1.weight"].shape == (96, 96 + 32)  # min(dim, 1024) + clip_text_dim
    assert sd["time_text_embed.1.bias"].shape == (96,)
    with torch.device("meta"):
        wide = NextDiT(
            tiny_dit_config(dim=1280, n_heads=10, n_kv_heads=5, clip_text_dim=64, axes_dims=(32, 48, 48))
        ).state_dict()
    assert wide["time_text_embed.1.weight"].shape == (1024, 1024 + 64)  # conditioning width capped at 1024
    assert wide["final_layer.adaLN_modulation.1.weight"].shape == (1280, 1024)

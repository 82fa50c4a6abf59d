"""The peers of `newbie bench speed`: diffusers' Lumina2 at our DiT's shapes (eager, regional compile,
cache-dit fp8 + compile). The step cache against cache-dit's DBCache: newbie.bench.speed_cache."""

from __future__ import annotations

import time

import torch

from newbie.bench.speed_measure import _sync, _time


def lumina2_like(cfg, sample_size: int = 128):
    """diffusers' Lumina2 transformer with our DiTConfig's shapes (random weights, fp32, CPU): the peer of
    the speed bench and the twin of the parity test."""
    from diffusers import Lumina2Transformer2DModel

    return Lumina2Transformer2DModel(
        sample_size=sample_size,
        patch_size=cfg.patch_size,
        in_channels=cfg.in_channels,
        hidden_size=cfg.dim,
        num_layers=cfg.n_layers,
        num_refiner_layers=cfg.n_refiner_layers,
        num_attention_heads=cfg.n_heads,
        num_kv_heads=cfg.n_kv_heads,
        multiple_of=cfg.multiple_of,
        ffn_dim_multiplier=None,
        norm_eps=cfg.norm_eps,
        axes_dim_rope=cfg.axes_dims,
        axes_lens=cfg.axes_lens,
        cap_feat_dim=cfg.cap_feat_dim,
    )


def lumina2_state_dict(sd: dict, cfg) -> dict:
    """Our (official) DiT state dict in diffusers' Lumina2 names (spec §1.3), the pooled-caption path left out:
    Lumina2 has none, so its caller feeds our conditioning vector in its place."""
    out = {}
    q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    for k, v in sd.items():
        n = k
        if n.startswith(("clip_text_pooled_proj.", "time_text_embed.")):
            continue
        n = n.replace("cap_embedder.", "time_caption_embed.caption_embedder.")
        n = n.replace("t_embedder.mlp.0.", "time_caption_embed.timestep_embedder.linear_1.")
        n = n.replace("t_embedder.mlp.2.", "time_caption_embed.timestep_embedder.linear_2.")
        n = n.replace("final_layer.adaLN_modulation.1.", "norm_out.linear_1.")
        n = n.replace("final_layer.linear.", "norm_out.linear_2.")
        if n.endswith("attention.qkv.weight"):
            base = n[: -len("attention.qkv.weight")]
            wq, wk, wv = v.split([q, kv, kv])
            out[base + "attn.to_q.weight"], out[base + "attn.to_k.weight"], out[base + "attn.to_v.weight"] = (
                wq,
                wk,
                wv,
            )
            continue
        n = n.replace("attention.out.", "attn.to_out.0.").replace("attention.q_norm.", "attn.norm_q.")
        n = n.replace("attention.k_norm.", "attn.norm_k.")
        for i in (1, 2, 3):
            n = n.replace(f"feed_forward.w{i}.", f"feed_forward.linear_{i}.")
        n = n.replace("adaLN_modulation.1.", "norm1.linear.")
        if n.startswith("context_refiner."):
            n = n.replace("attention_norm1.", "norm1.")
        else:
            n = n.replace("attention_norm1.", "norm1.norm.")
        n = n.replace("attention_norm2.", "norm2.")
        out[n] = v
    return out


def _lumina2(dit):
    """diffusers' Lumina2 at our DiT's shapes, random weights, on its device and dtype."""
    p = next(dit.parameters())
    with torch.device(p.device):
        return lumina2_like(dit.cfg).to(p.dtype).eval()


def _diffusers_inputs(S):
    """The latent and captions of our step in diffusers' layout: one padded batch with a caption mask."""
    cond, unc, x = S["cond"], S["unc"], S["x"]
    L = cond.cap_feats.shape[1]
    caps = cond.cap_feats.new_zeros(2, L, cond.cap_feats.shape[2])
    caps[0] = cond.cap_feats[0]
    caps[1, : unc.cap_feats.shape[1]] = unc.cap_feats[0]
    mask = torch.zeros(2, L, dtype=torch.bool, device=x.device)
    mask[0] = True
    mask[1, : unc.cap_feats.shape[1]] = True
    return caps, mask, x


def _diffusers_step(S, model):
    """One CFG step of diffusers' model on our step's inputs (one padded, masked batch of two), as fwd()."""
    caps, mask, x = _diffusers_inputs(S)
    xx = x.repeat(2, 1, 1, 1).to(caps.dtype)
    t = torch.full((2,), 0.5, device=x.device, dtype=caps.dtype)
    return lambda: model(xx, t, caps, mask, return_dict=False)[0]


def _diffusers_peers(S, res, R) -> None:
    """diffusers' Lumina2 eager at our shapes; the model stays for DBCache, compile and cache-dit fp8."""
    peers = res["peers"]
    model = S["lumina2"] = _lumina2(S["dit"])
    fwd = _diffusers_step(S, model)

    with torch.no_grad():
        res["diffusers_eager_s_per_step"] = peers["diffusers_eager"] = _time(fwd, 1, 3)
        print(f"diffusers eager {peers['diffusers_eager']:.4f} s/step", flush=True)


def _diffusers_compiled(S, res, R) -> None:
    peers = res["peers"]
    model = S.get("lumina2")
    if model is None:
        peers["diffusers_compiled"] = "not run: the diffusers model did not build"
        return
    fwd = _diffusers_step(S, model)

    with torch.no_grad():
        # regional compile, as diffusers recommends (its compile_repeated_blocks; Lumina2 in diffusers 0.42
        # does not declare _repeated_blocks, so the blocks are named here)
        t0 = time.perf_counter()
        for m in model.modules():
            if type(m).__name__ == "Lumina2TransformerBlock":
                m.compile()
        fwd()
        _sync(S["x"].device)
        res["diffusers_compile_s"] = time.perf_counter() - t0
        res["diffusers_compiled_s_per_step"] = peers["diffusers_compiled"] = _time(fwd, 1, 5)
        print(
            f"diffusers compiled {peers['diffusers_compiled']:.4f} s/step (compile {res['diffusers_compile_s']:.1f} s)",
            flush=True,
        )


def _cache_dit_fp8(S, res, R) -> None:
    peers = res["peers"]
    model = S.pop("lumina2", None)
    if model is None:
        peers["cache_dit_fp8_compiled"] = "not run: the diffusers model did not build"
        return
    import cache_dit

    fwd = _diffusers_step(S, model)

    res["cache_dit_version"] = getattr(cache_dit, "__version__", "?")
    # diffusers' ModelMixin declares `_repeated_blocks = []`, which cache-dit reads before its config's list
    model._repeated_blocks = ["Lumina2TransformerBlock"]
    with torch.no_grad():
        cache_dit.quantize(
            model,
            cache_dit.QuantizeConfig(
                quant_type="float8_per_row", repeated_blocks=["Lumina2TransformerBlock"]
            ),
        )
        cache_dit.set_compile_configs()
        t0 = time.perf_counter()
        fwd()
        _sync(S["x"].device)
        res["cache_dit_fp8_compile_s"] = time.perf_counter() - t0
        peers["cache_dit_fp8_compiled"] = _time(fwd, 1, 5)
    print(f"cache-dit fp8 + compile {peers['cache_dit_fp8_compiled']:.4f} s/step", flush=True)
    model = None
    torch.cuda.empty_cache()


def _trajectory(pair_fn, x: torch.Tensor, steps: int, cfg: float = 5.0) -> torch.Tensor:
    """Euler over sigma 1 -> 0 with CFG on every step; pair_fn(x, sigma) -> [cond; uncond] dx/dsigma."""
    sig = torch.linspace(1.0, 0.0, steps + 1).tolist()
    x = x.float()
    for i in range(steps):
        c, u = pair_fn(x, sig[i]).float().chunk(2)
        x = x + (sig[i + 1] - sig[i]) * (u + cfg * (c - u))
    return x

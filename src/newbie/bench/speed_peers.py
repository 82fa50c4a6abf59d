"""The peers of `newbie bench speed`: diffusers' Lumina2 at our DiT's shapes (eager, regional compile,
cache-dit fp8 + compile), and our first-block step cache against cache-dit's DBCache on one trajectory."""

from __future__ import annotations

import time

import torch

from newbie.bench.speed_measure import _sync, _time, psnr


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


def _cache_comparison(S, res, R, steps: int) -> None:
    """Our first-block step cache and cache-dit's DBCache (F1B0: also the first block decides), each against
    its own uncached run on the same trajectory (same noise, captions, Euler steps, CFG 5), image PSNR through
    our VAE; the PSNR-matched pair is the one to compare."""
    from newbie.model import fused

    pipe, dit = S["pipe"], S["dit"]
    fused.use_cuda_graphs(dit, False)  # the step cache syncs with the host: plain compiled forward

    def decode(z):
        return pipe.codec.decode(z)[0].permute(1, 2, 0).cpu()

    out: dict = {"steps": steps, "cfg": 5.0, "sampler": "euler"}
    res["cache_comparison"] = out

    with torch.no_grad():
        _ours_cached(S, res, R, steps, decode, out)
        try:
            # only whether they are there: _dbcache_cached imports them again
            import cache_dit  # noqa: F401
            from cache_dit import DBCacheConfig  # noqa: F401
        except ImportError as e:
            res.setdefault("peers", {})["cache_dit_dbcache"] = f"not run: cache-dit not installed ({e})"
            return
        if R.left() < 25:
            res.setdefault("peers", {})["cache_dit_dbcache"] = "not run: device budget"
            return
        _dbcache_cached(S, res, R, steps, decode, out)
        torch.cuda.empty_cache()


def _ours_cached(S, res, R, steps: int, decode, out: dict) -> None:
    """Our step cache at thresholds 0.05 and 0.1 and --step-cache auto's policy against our uncached trajectory."""
    from newbie.model.step_cache import AUTO, StepCache
    from newbie.sampling.guidance import split_pair, velocity_fn

    dit, cond, unc, grid, x = (S[k] for k in ("dit", "cond", "unc", "grid", "x"))
    rc = dit.rope(cond.cap_mask.sum(1), cond.cap_feats.shape[1], grid, grid)
    ru = dit.rope(unc.cap_mask.sum(1), unc.cap_feats.shape[1], grid, grid)

    def ours(threshold):
        setting = AUTO if threshold == "auto" else threshold
        caches = [StepCache.of(setting), StepCache.of(setting)] if setting else [None, None]
        pair = split_pair(velocity_fn(dit, cond, rc, caches[0]), velocity_fn(dit, unc, ru, caches[1]))
        _sync(x.device)
        t0 = time.perf_counter()
        z = _trajectory(pair, x, steps)
        _sync(x.device)
        hits = sum(c.hits for c in caches if c)
        return z, time.perf_counter() - t0, hits

    z_ref, t_ref, _ = ours(0.0)
    img_ref = decode(z_ref)
    out["newbie_uncached_s"] = t_ref
    for th in (0.05, 0.1, "auto"):  # auto: --step-cache auto's policy (model/step_cache.py)
        z, secs, hits = ours(th)
        entry = {
            "s": secs,
            "speedup": t_ref / secs,
            "psnr": psnr(decode(z), img_ref),
            "reused_calls": hits,
            "calls": 2 * steps,
        }
        out[f"newbie_step_cache_{th}"] = entry
        res[f"step_cache_{th}"] = {
            "s_per_trajectory": secs,
            "speedup": entry["speedup"],
            "psnr_vs_uncached": entry["psnr"],
            "reused_calls": hits,
            "calls": 2 * steps,
        }
        R.save()


def _dbcache_cached(S, res, R, steps: int, decode, out: dict) -> None:
    """cache-dit's DBCache on diffusers' Lumina2 against its uncached trajectory, matched by PSNR to ours."""
    import cache_dit
    from cache_dit import DBCacheConfig

    x = S["x"]
    # eager: cache-dit's hooks go on before any compile
    model = S["lumina2"] if S.get("lumina2") is not None else _lumina2(S["dit"])
    caps, mask, _ = _diffusers_inputs(S)

    def pair_fn(z, sigma):
        t = torch.full((2,), 1.0 - sigma, device=z.device, dtype=caps.dtype)
        return -model(z.repeat(2, 1, 1, 1).to(caps.dtype), t, caps, mask, return_dict=False)[0]

    def theirs(threshold):
        if threshold:
            cache_dit.enable_cache(
                model,
                cache_config=DBCacheConfig(
                    Fn_compute_blocks=1,
                    Bn_compute_blocks=0,
                    residual_diff_threshold=threshold,
                    max_warmup_steps=2,
                    num_inference_steps=steps,
                    enable_separate_cfg=False,
                ),
            )
        _sync(x.device)
        t0 = time.perf_counter()
        z = _trajectory(pair_fn, x, steps)
        _sync(x.device)
        secs = time.perf_counter() - t0
        cached = None
        if threshold:
            stats = cache_dit.summary(model)
            cached = len(stats[0].cached_steps) if stats else None
            cache_dit.disable_cache(model)
        return z, secs, cached

    z_ref, t_ref, _ = theirs(0.0)
    img_ref = decode(z_ref)
    out["diffusers_eager_uncached_s"] = t_ref
    best = None
    for th in (0.1,):  # the same threshold as ours: both measure the first block's relative L1 change
        if R.left() < t_ref + 8:
            res.setdefault("peers", {})["cache_dit_dbcache"] = "not run: device budget"
            break
        z, secs, cached = theirs(th)
        entry = {
            "s": secs,
            "speedup": t_ref / secs,
            "psnr": psnr(decode(z), img_ref),
            "cached_steps": cached,
        }
        out[f"cache_dit_dbcache_{th}"] = entry
        ours_match = min(
            (v for k, v in out.items() if k.startswith("newbie_step_cache_")),
            key=lambda v: abs(v["psnr"] - entry["psnr"]),
        )
        if best is None or abs(ours_match["psnr"] - entry["psnr"]) < best[0]:
            best = (abs(ours_match["psnr"] - entry["psnr"]), th, entry, ours_match)
        R.save()
    if best:
        _, th, entry, mine = best
        out["matched"] = {
            "cache_dit_threshold": th,
            "cache_dit_speedup": entry["speedup"],
            "cache_dit_psnr": entry["psnr"],
            "newbie_speedup": mine["speedup"],
            "newbie_psnr": mine["psnr"],
        }
        res.setdefault("peers", {})["cache_dit_dbcache"] = entry["s"] / steps

"""`newbie bench speed`'s step cache sections: every policy of newbie.bench.step_cache_eval.POLICIES and
cache-dit's DBCache on one trajectory, and each policy's binding on the demo model, merged into the JSON's
`step_cache_policies` (name -> calls, PSNR, binding).

The trajectory: 28 Euler steps, CFG 5 on every step, the bench's noise and captions, PSNR through our VAE
against the same side's uncached run. DBCache runs on diffusers' Lumina2 carrying our DiT's weights (our
conditioning vector in place of its time embedding, as the parity test does), so both sides sample the same
model from the same start. `calls` = joint layers run / joint layers, both branches: a skipped call still
pays for the layers a policy always runs (our first and `last`, DBCache's Fn and Bn).
"""

from __future__ import annotations

import time

import torch

from newbie.bench.speed_measure import _sync, psnr
from newbie.bench.speed_peers import _diffusers_inputs, _lumina2, _trajectory, lumina2_state_dict
from newbie.bench.step_cache_eval import POLICIES, demo_binding, describe, trajectory_table

# cache-dit's DBCache settings run against ours: name -> (Fn, Bn, threshold, TaylorSeer order or 0). F1B0 at
# 0.1 is the 2026-12-01 comparison (2.40x at 47.5 dB on its own random weights).
DBCACHE = {
    "dbcache_F1B0_0.1": (1, 0, 0.1, 0),
    "dbcache_F1B0_0.15": (1, 0, 0.15, 0),
    "dbcache_F1B0_0.2": (1, 0, 0.2, 0),
    "dbcache_F1B0_0.15_taylor1": (1, 0, 0.15, 1),
}


def cache_comparison(S, res, R, steps: int) -> None:
    """Our policies, then DBCache's where cache-dit is installed (a reason in `peers` where not)."""
    from newbie.model import fused

    pipe, dit = S["pipe"], S["dit"]
    fused.use_cuda_graphs(dit, False)  # the step cache syncs with the host: plain compiled forward

    def decode(z):
        return pipe.codec.decode(z)[0].permute(1, 2, 0).cpu()

    out: dict = {"steps": steps, "cfg": 5.0, "sampler": "euler"}
    res["cache_comparison"] = out
    with torch.no_grad():
        out["newbie"] = _ours(S, steps, decode)
        _merge(res, out["newbie"])
        R.save()
        try:
            # only whether they are there: _dbcache imports them again
            import cache_dit  # noqa: F401
            from cache_dit import DBCacheConfig  # noqa: F401
        except ImportError as e:
            res.setdefault("peers", {})["cache_dit_dbcache"] = f"not run: cache-dit not installed ({e})"
            return
        if R.left() < 25:
            res.setdefault("peers", {})["cache_dit_dbcache"] = "not run: device budget"
            return
        _dbcache(S, res, R, steps, decode, out)
        torch.cuda.empty_cache()


def _ours(S, steps: int, decode) -> dict:
    from newbie.model.step_cache import StepCache
    from newbie.sampling.guidance import split_pair, velocity_fn

    dit, cond, unc, grid, x = (S[k] for k in ("dit", "cond", "unc", "grid", "x"))
    rc = dit.rope(cond.cap_mask.sum(1), cond.cap_feats.shape[1], grid, grid)
    ru = dit.rope(unc.cap_mask.sum(1), unc.cap_feats.shape[1], grid, grid)

    def run(setting):
        caches = [StepCache.of(setting), StepCache.of(setting)] if setting else [None, None]
        pair = split_pair(velocity_fn(dit, cond, rc, caches[0]), velocity_fn(dit, unc, ru, caches[1]))
        _sync(x.device)
        t0 = time.perf_counter()
        z = _trajectory(pair, x, steps)
        _sync(x.device)
        return z, time.perf_counter() - t0, [c for c in caches if c]

    return trajectory_table(run, decode, len(dit.layers), 2 * steps, POLICIES, psnr)


def _merge(res: dict, table: dict) -> None:
    """Trajectory rows into step_cache_policies, keeping any binding already there; speed-ups from seconds."""
    rows = res.setdefault("step_cache_policies", {})
    base = table["none"]["s"]
    for name, row in table.items():
        setting = POLICIES.get(name)
        entry = rows.setdefault(name, {"binding": "not measured"})
        entry.update({k: row[k] for k in ("calls", "full_calls", "of_calls", "psnr_db")})
        entry["speedup"] = base / row["s"] if row.get("s") else None
        if setting is not None or name == "none":
            entry["setting"] = describe(setting or 0.0)


def _twin(S):
    """diffusers' Lumina2 (eager: cache-dit's hooks go on before any compile) carrying our DiT's weights, with
    our conditioning vector (time + pooled Jina feature) in place of its time embedding, which has no pooled
    path -> (model, undo the embedding's replacement)."""
    dit, cond, unc = S["dit"], S["cond"], S["unc"]
    model = S["lumina2"] if S.get("lumina2") is not None else _lumina2(dit)
    sd = {k.replace("_orig_mod.", ""): v for k, v in dit.state_dict().items()}
    missing, unexpected = model.load_state_dict(lumina2_state_dict(sd, dit.cfg), strict=False)
    if missing or unexpected:
        raise RuntimeError(
            f"our weights do not map onto Lumina2: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    p = next(model.parameters())
    pooled = torch.cat([cond.pooled, unc.pooled]).to(p.device, p.dtype)
    embed = model.time_caption_embed
    embed.forward = lambda hs, ts, ehs: (dit.conditioning(ts, pooled, hs.dtype), embed.caption_embedder(ehs))
    return model, lambda: delattr(embed, "forward")


def _dbcache_runner(S, model, steps: int):
    """run((Fn, Bn, threshold, order)) -> (latent, seconds, cached steps) on the twin; threshold 0: no cache."""
    import cache_dit
    from cache_dit import DBCacheConfig, TaylorSeerCalibratorConfig

    x = S["x"]
    caps, mask, _ = _diffusers_inputs(S)

    def pair_fn(z, sigma):
        t = torch.full((2,), 1.0 - sigma, device=z.device, dtype=caps.dtype)
        return -model(z.repeat(2, 1, 1, 1).to(caps.dtype), t, caps, mask, return_dict=False)[0]

    def run(setting):
        fn, bn, threshold, order = setting
        if threshold:
            cache_dit.enable_cache(
                model,
                cache_config=DBCacheConfig(
                    Fn_compute_blocks=fn,
                    Bn_compute_blocks=bn,
                    residual_diff_threshold=threshold,
                    max_warmup_steps=2,
                    num_inference_steps=steps,
                    enable_separate_cfg=False,
                ),
                calibrator_config=TaylorSeerCalibratorConfig(taylorseer_order=order) if order else None,
            )
        _sync(x.device)
        t0 = time.perf_counter()
        z = _trajectory(pair_fn, x, steps)
        _sync(x.device)
        secs = time.perf_counter() - t0
        cached = 0
        if threshold:
            stats = cache_dit.summary(model)
            cached = len(stats[0].cached_steps) if stats else 0
            cache_dit.disable_cache(model)
        return z, secs, cached

    return run


def _dbcache_row(setting, cached: int, steps: int, n_layers: int) -> dict:
    fn, bn, threshold, order = setting
    return {
        # a cached step of the batched pair still runs Fn + Bn layers for both branches
        "calls": round(2 * (steps - cached) + 2 * cached * (fn + bn) / n_layers, 2),
        "full_calls": 2 * (steps - cached),
        "of_calls": 2 * steps,
        "setting": f"DBCache F{fn}B{bn}, threshold {threshold}, 2 warm-up steps"
        + (f", TaylorSeer order {order}" if order else ""),
        "binding": "not measured: cache-dit runs on diffusers' Lumina2, not on the demo model",
    }


def _dbcache(S, res, R, steps: int, decode, out: dict) -> None:
    model, undo = _twin(S)
    run = _dbcache_runner(S, model, steps)
    table = {}
    try:
        z_ref, t_ref, _ = run((0, 0, 0.0, 0))
        img_ref = decode(z_ref)
        out["diffusers_uncached_s"] = t_ref
        # the two implementations' uncached images: how far "the same trajectory" is from itself
        out["diffusers_uncached_psnr_vs_newbie_db"] = psnr(img_ref, decode(_newbie_uncached(S, steps)))
        for name, setting in DBCACHE.items():
            if R.left() < t_ref + 8:
                out.setdefault("skipped", []).append(name)
                continue
            z, secs, cached = run(setting)
            table[name] = _dbcache_row(setting, cached, steps, len(model.layers))
            table[name].update(psnr_db=psnr(decode(z), img_ref), speedup=t_ref / secs, s=secs)
            R.save()
    finally:
        undo()
    out["cache_dit_dbcache"] = table
    res.setdefault("step_cache_policies", {}).update(table)
    if table:
        res.setdefault("peers", {})["cache_dit_dbcache"] = next(iter(table.values()))["s"] / steps
        out["matched"] = matched(res["step_cache_policies"], table)
        # a DBCache row that spends fewer calls than any of our policies counts against us
        out["newbie_matches_dbcache"] = all(
            m.get("newbie_at_least_dbcache", False) for m in out["matched"].values()
        )


def _newbie_uncached(S, steps: int) -> torch.Tensor:
    from newbie.sampling.guidance import split_pair, velocity_fn

    dit, cond, unc, grid, x = (S[k] for k in ("dit", "cond", "unc", "grid", "x"))
    rc = dit.rope(cond.cap_mask.sum(1), cond.cap_feats.shape[1], grid, grid)
    ru = dit.rope(unc.cap_mask.sum(1), unc.cap_feats.shape[1], grid, grid)
    return _trajectory(split_pair(velocity_fn(dit, cond, rc), velocity_fn(dit, unc, ru)), x, steps)


def matched(rows: dict, theirs: dict) -> dict:
    """For each DBCache row: our best PSNR among the policies that spend no more calls, and whether it is at
    least DBCache's (the issue's target: at the same number of calls, at least its PSNR)."""
    ours = {n: r for n, r in rows.items() if n in POLICIES and n != "none" and r.get("psnr_db") is not None}
    out = {}
    for name, row in theirs.items():
        fits = {n: r for n, r in ours.items() if r["calls"] <= row["calls"] + 1e-9}
        if not fits:
            out[name] = {"dbcache_calls": row["calls"], "newbie": None}
            continue
        best = max(fits, key=lambda n: fits[n]["psnr_db"])
        out[name] = {
            "dbcache_calls": row["calls"],
            "dbcache_psnr_db": row["psnr_db"],
            "newbie": best,
            "newbie_calls": fits[best]["calls"],
            "newbie_psnr_db": fits[best]["psnr_db"],
            "newbie_at_least_dbcache": fits[best]["psnr_db"] >= row["psnr_db"],
        }
    return out


def binding(res: dict, device: str = "cpu", policies: dict | None = None, scenes: int = 4) -> None:
    """The demo model's binding for every policy (its trained trajectory; on the CPU, as the CPU table)."""
    policies = POLICIES if policies is None else policies
    demo = demo_binding(policies, scenes=scenes, seeds=1, device=device)
    res["step_cache_demo"] = {k: v for k, v in demo.items() if k != "policies"}
    rows = res.setdefault("step_cache_policies", {})
    for name, row in demo["policies"].items():
        entry = rows.setdefault(name, {"setting": describe(policies.get(name, 0.0))})
        entry["binding"] = row

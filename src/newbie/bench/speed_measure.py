"""The measuring side of `newbie bench speed`: timers, FLOP counts, the budgeted run that rewrites its JSON after
every section, and the targets table at the end."""

from __future__ import annotations

import json
import math
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from newbie.bench.time_limit import time_limit


def run_header(note: str, **fields) -> dict:
    """The first keys of a GPU result JSON: device, torch, date, start time (UTC), the given fields, a note."""
    now = datetime.now(timezone.utc)
    return {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "date": now.date().isoformat(),
        "started_utc": now.isoformat(timespec="seconds"),
        **fields,
        "note": note,
    }


def _time(fn, warm: int = 2, rep: int = 5) -> float:
    """Median seconds of fn: CUDA events on a GPU, the host clock without one (CPU tests of the sections)."""
    cuda = torch.cuda.is_available()
    for _ in range(warm):
        fn()
    _sync(cuda)
    times = []
    for _ in range(rep):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def _sync(cuda) -> None:
    if cuda is True or getattr(cuda, "type", None) == "cuda":
        torch.cuda.synchronize()


def matmul_tflops(n: int = 8192) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    # 3 warm-ups and the median of 10, as in issue 6's run: the rate at boost clocks. After a second of
    # back-to-back products the card reads lower (power-limited on random data; docs/benchmarks.md)
    return 2 * n**3 / _time(lambda: a @ b, 3, 10) / 1e12


def step_flops(dit, cap_lens: list[int], image_tokens: int) -> float:
    """Linear layers 2·params·tokens plus attention 4·n²·dim per joint/refiner layer, per sample.

    The count of issue 6, kept so numbers stay comparable: it charges every block parameter per token, the
    per-sample adaLN projection too (see `step_flops_exact`)."""
    cfg = dit.cfg
    block_params = sum(p.numel() for p in dit.layers[0].parameters())
    total = 0.0
    for cap in cap_lens:
        n = cap + image_tokens
        total += 2 * block_params * (cfg.n_layers * n + cfg.n_refiner_layers * (image_tokens + cap))
        total += 4 * cfg.dim * (cfg.n_layers * n * n + cfg.n_refiner_layers * (image_tokens**2 + cap**2))
    return total


def step_flops_exact(dit, cap_lens: list[int], image_tokens: int) -> float:
    """As step_flops, but the adaLN projection once per sample and block, not per token (and the caption
    refiner has none)."""
    cfg = dit.cfg
    block = dit.layers[0]
    ada = sum(p.numel() for p in block.adaLN_modulation.parameters())
    per_token = sum(p.numel() for p in block.parameters()) - ada
    total = 0.0
    for cap in cap_lens:
        n = cap + image_tokens
        total += 2 * per_token * (cfg.n_layers * n + cfg.n_refiner_layers * (image_tokens + cap))
        total += 2 * ada * (cfg.n_layers + cfg.n_refiner_layers)
        total += 4 * cfg.dim * (cfg.n_layers * n * n + cfg.n_refiner_layers * (image_tokens**2 + cap**2))
    return total


def attention_ms_per_step(dit, cap_lens: list[int], image_tokens: int, backend: str) -> float:
    """Attention kernel time of one CFG step, from timing the kernel alone at each sequence length."""
    from newbie.model.fused import time_backends

    cfg = dit.cfg
    total = 0.0
    calls: dict[int, int] = {}
    for cap in cap_lens:
        for n, k in (
            (cap + image_tokens, cfg.n_layers),
            (image_tokens, cfg.n_refiner_layers),
            (cap, cfg.n_refiner_layers),
        ):
            calls[n] = calls.get(n, 0) + k
    name = backend
    for n, k in calls.items():
        ms = time_backends(cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, n, names=(name,))[name]
        total += k * (ms if isinstance(ms, float) else math.nan)
    return total


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def _image_tensor(img) -> torch.Tensor:
    import numpy as np

    return torch.from_numpy(np.asarray(img).astype("float32") / 255.0)


class _Run:
    """Sections against a time budget; the JSON is rewritten after each one."""

    def __init__(self, res: dict, paths: list[Path], budget_s: float, skip: tuple[str, ...] = ()):
        self.res, self.paths, self.t0, self.budget = res, paths, time.perf_counter(), budget_s
        self.skip = skip

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t0)

    def save(self) -> None:
        self.res["bench_elapsed_s"] = time.perf_counter() - self.t0
        text = json.dumps(self.res, indent=1, default=str)
        for p in self.paths:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)

    def section(self, name: str, need_s: float, fn, limit_s: float | None = None) -> bool:
        """Run fn unless fewer than need_s seconds are left; stop it after limit_s (default: what is left of
        the budget), so one slow or hung section cannot take the run's other numbers with it; record failures
        with the reason and go on."""
        if name in self.skip:
            self.res.setdefault("skipped", {})[name] = "not run: --skip"
            self.save()
            return False
        if self.left() < need_s:
            why = f"not run: {self.left():.0f} s of the device budget left, the section needs ~{need_s:.0f} s"
            self.res.setdefault("skipped", {})[name] = why
            print(f"skip {name}", flush=True)
            self.save()
            return False
        limit = max(1.0, min(limit_s or math.inf, self.left()))
        t = time.perf_counter()
        ok = True
        try:
            with time_limit(limit, message=f"stopped after {limit:.0f} s (section limit)"):
                fn()
        except Exception as e:  # noqa: BLE001 - a bench reports why a section failed, and goes on
            import traceback

            traceback.print_exc()
            self.res.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"[:400]
            ok = False
        self.res.setdefault("section_s", {})[name] = round(time.perf_counter() - t, 1)
        print(f"[{time.perf_counter() - self.t0:6.1f} s] {name} {'done' if ok else 'FAILED'}", flush=True)
        self.save()
        return ok


TARGETS = {  # issue 15, H200
    "bf16 step <= 0.100 s": ("newbie_s_per_step", lambda v: v <= 0.100),
    "bf16 step >= 86% of ceiling": ("newbie_pct_of_ceiling", lambda v: v >= 0.86),
    "2048² step >= 80% of ceiling": (("sizes", "2048", "pct_of_ceiling"), lambda v: v >= 0.80),
    "fp8 step <= 0.075 s": ("newbie_fp8_s_per_step", lambda v: v <= 0.075),
    "official image bf16 <= 2.9 s": ("image_official_s", lambda v: v <= 2.9),
    "official image fp8 <= 2.3 s": ("image_official_fp8_s", lambda v: v <= 2.3),
    "compile cold <= 20 s": ("compile_cold_s", lambda v: v <= 20),
    "compile warm <= 5 s": ("compile_warm_s", lambda v: v <= 5),
    # issue 26
    "attention bf16 >= 550 TFLOP/s": ("attention_tflops_bf16", lambda v: v >= 550),
    "attention fp8 >= 800 TFLOP/s": ("attention_tflops_fp8", lambda v: v >= 800),
    "fp8 step <= 0.60x bf16": ("fp8_step_ratio_vs_bf16", lambda v: v <= 0.60),
    "step cache >= DBCache's PSNR at <= its calls": (("cache_comparison", "newbie_matches_dbcache"), bool),
    "Gemma expansion >= 200 tokens/s": ("llm_tokens_per_s", lambda v: v >= 200),
}


def _targets(res: dict) -> dict:
    out = {}
    for name, (key, ok) in TARGETS.items():
        v = res
        for k in key if isinstance(key, tuple) else (key,):
            v = v.get(k) if isinstance(v, dict) else None
        out[name] = (
            {"value": v, "met": bool(ok(v))} if isinstance(v, (int, float)) else {"value": v, "met": None}
        )
    return out


def _print_table(res: dict) -> None:
    rows = [
        ("bf16 matmul ceiling (TFLOP/s)", res.get("matmul_tflops")),
        ("newbie eager s/step", res.get("newbie_eager_s_per_step")),
        ("newbie compiled s/step", res.get("newbie_s_per_step")),
        ("newbie graphed s/step", res.get("newbie_graphed_s_per_step")),
        ("compile cold s", res.get("compile_cold_s")),
        ("compile warm s", res.get("compile_warm_s")),
        ("newbie % of ceiling", res.get("newbie_pct_of_ceiling")),
        ("newbie fp8 s/step", res.get("newbie_fp8_s_per_step")),
        ("diffusers eager s/step", res.get("diffusers_eager_s_per_step")),
        ("diffusers compiled s/step", res.get("diffusers_compiled_s_per_step")),
        ("image official s", res.get("image_official_s")),
        ("image official fp8 s", res.get("image_official_fp8_s")),
        ("newbie s/image (28 euler)", res.get("newbie_s_per_image")),
        ("peak GiB", res.get("peak_gib")),
        ("Gemma decode tokens/s", res.get("llm_tokens_per_s")),
    ]
    for name, value in rows:
        print(f"{name:<34} {f'{value:.4f}' if isinstance(value, (int, float)) else '-'}")
    for name, t in res.get("targets", {}).items():
        print(f"target {name:<32} {t['met']}")

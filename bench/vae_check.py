"""Our AutoencoderKL (newbie.model.autoencoder) against diffusers' on a GPU, at the FLUX.1 VAE's full size with
random weights (the same tensors in both): equality and speed of decode (1024^2, eager and channels_last,
fp32 and bf16), tiled decode (2048^2 in 512 px tiles), encode (1024^2), optionally the compiled decoder;
and what importing each class costs in a fresh process beyond torch. Without diffusers installed only ours
is timed (the reason is recorded).

Writes vae-check-<device>-<date>.json to $OUT (or the current folder).

    python bench/vae_check.py [--compile] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

IMPORTS = {
    "ours": "import newbie.model.autoencoder",
    "diffusers": "from diffusers import AutoencoderKL",
}


def import_seconds(stmt: str) -> float | str:
    """Seconds for `stmt` in a fresh interpreter that has already imported torch."""
    code = f"import time, torch\nt = time.perf_counter()\n{stmt}\nprint(time.perf_counter() - t)"
    env = {**os.environ, "PYTHONPATH": f"{SRC}:{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    return float(out.stdout.split()[-1]) if out.returncode == 0 else f"failed: {out.stderr.strip()[-200:]}"


def timed(fn, repeats: int) -> tuple[torch.Tensor, float]:
    """fn's output and its median seconds over `repeats` runs after one warm-up."""
    out = fn()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return out, statistics.median(times)


def models(device: str):
    from newbie.loading.comfy import FLUX_VAE_CONFIG
    from newbie.model.autoencoder import AutoencoderConfig, AutoencoderKL

    raw = json.loads(FLUX_VAE_CONFIG.read_text())
    torch.manual_seed(0)
    ours = AutoencoderKL(AutoencoderConfig.from_dict(raw)).eval().requires_grad_(False)
    try:
        from newbie.quiet_imports import import_model_libraries

        import_model_libraries()
        from diffusers import AutoencoderKL as Theirs
    except ImportError as e:
        return ours.to(device), None, f"not run: diffusers is not installed ({e})"
    theirs = Theirs.from_config(raw).eval().requires_grad_(False)
    theirs.load_state_dict(ours.state_dict())
    return ours.to(device), theirs.to(device), None


def compare(name: str, ours_fn, theirs_fn, res: dict, repeats: int) -> None:
    a, t_ours = timed(ours_fn, repeats)
    row = {"ours_s": round(t_ours, 4)}
    if theirs_fn is not None:
        b, t_theirs = timed(theirs_fn, repeats)
        row.update(
            theirs_s=round(t_theirs, 4),
            equal=bool(torch.equal(a, b)),
            max_abs_diff=float((a.float() - b.float()).abs().max()),
        )
    res[name] = row
    print(name, json.dumps(row), flush=True)


def both(ours, theirs) -> tuple:
    return (ours,) if theirs is None else (ours, theirs)


def one_dtype(ours, theirs, dtype: torch.dtype, g: torch.Generator, res: dict, repeats: int) -> None:
    tag, dev = str(dtype).removeprefix("torch."), "cuda"
    for m in both(ours, theirs):
        m.to(dtype)
    z = torch.randn(1, 16, 128, 128, generator=g, device=dev, dtype=dtype)
    x = torch.rand(1, 3, 1024, 1024, generator=g, device=dev, dtype=dtype) * 2 - 1
    big = torch.randn(1, 16, 256, 256, generator=g, device=dev, dtype=dtype)
    td = (lambda: theirs.decode(z).sample) if theirs is not None else None
    te = (lambda: theirs.encode(x).latent_dist.mode()) if theirs is not None else None
    tt = (lambda: theirs.decode(big).sample) if theirs is not None else None
    compare(f"decode_1024_{tag}", lambda: ours.decode(z), td, res, repeats)
    compare(f"encode_1024_{tag}", lambda: ours.encode(x), te, res, repeats)
    for m in both(ours, theirs):
        m.to(memory_format=torch.channels_last)
    compare(f"decode_1024_{tag}_channels_last", lambda: ours.decode(z), td, res, repeats)
    for m in both(ours, theirs):
        m.to(memory_format=torch.contiguous_format)
        m.enable_tiling()
        m.tile_sample_min_size, m.tile_latent_min_size = 512, 64  # as memory/residency.py sets them
    compare(f"tiled_decode_2048_{tag}", lambda: ours.decode(big), tt, res, 1)
    for m in both(ours, theirs):
        m.disable_tiling()


@torch.no_grad()
def run(args) -> dict:
    res: dict = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "import_s": {k: import_seconds(v) for k, v in IMPORTS.items()},
    }
    ours, theirs, why = models("cuda")
    if why:
        res["diffusers"] = why
    g = torch.Generator(device="cuda").manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        one_dtype(ours, theirs, dtype, g, res, args.repeats)
    res["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if args.compile:
        t = time.perf_counter()
        ours.decoder.compile()
        z = torch.randn(1, 16, 128, 128, generator=g, device="cuda", dtype=torch.bfloat16)
        ours.decode(z)
        res["compile_s"] = round(time.perf_counter() - t, 1)
        compare("decode_1024_bfloat16_compiled", lambda: ours.decode(z), None, res, args.repeats)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--compile", action="store_true", help="also time our compiled decoder (bf16)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("vae_check: needs a CUDA GPU")
    res = run(args)
    found = re.findall(r"[a-z]\d{2,3}", res["device"].lower().replace("nvidia", ""))  # "h100", "h200"
    name = found[0] if found else re.sub(r"[^a-z0-9]+", "-", res["device"].lower()).strip("-")
    out = Path(os.environ.get("OUT", ".")) / f"vae-check-{name}-{date.today()}.json"
    out.write_text(json.dumps(res, indent=2))
    print(out)


if __name__ == "__main__":
    main()

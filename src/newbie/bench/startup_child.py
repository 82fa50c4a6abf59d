"""The fresh processes of `newbie bench startup`: each probe runs alone in a new interpreter and prints one
line `@@{json}` (newbie.bench.startup reads it), so every figure includes the one-time costs a user pays.

    python -m newbie.bench.startup_child load '{"model": ..., "device": ..., "size": 1024}'
"""

from __future__ import annotations

import json
import sys
import time

T_START = time.perf_counter()  # before torch: the probes report import times from here

# `import newbie` and the CLI's parsing, up to the start of loading (run with python -c, so that not even
# newbie.bench is imported before it). The heavy packages must stay out; nothing may be printed.
IMPORT_PROBE = """
import json, sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
import newbie
from newbie.cli.main import build_parser
args = build_parser().parse_args(sys.argv[1:])
t2 = time.perf_counter()
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"transformers", "diffusers", "torchao", "accelerate"})
print("@@" + json.dumps({"torch_s": t1 - t0, "import_s": t2 - t1, "heavy_modules": heavy}))
"""


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def probe_load(
    model: str, device: str, size: int, prompt: str, second: bool = False, warm: bool = False
) -> dict:
    """newbie.load() after `import torch` and CUDA init; then (after warm_up when `warm`) the first text
    encode and the first denoise steps (time between progress callbacks), the encode being served from the
    embedding cache."""
    import torch

    out: dict = {"torch_import_s": time.perf_counter() - T_START}
    t0 = time.perf_counter()
    if device.startswith("cuda"):
        torch.cuda.init()
        out["device"] = torch.cuda.get_device_name()
    else:
        out["device"] = "cpu"
    out["cuda_init_s"] = time.perf_counter() - t0
    from newbie.pipeline.load import load  # what newbie.load calls

    t0 = time.perf_counter()
    pipe = load(model, device=device)
    _sync(device)
    out["load_s"] = time.perf_counter() - t0
    out["load_parts_s"] = getattr(pipe, "load_timings", None)
    if second:
        del pipe
        t0 = time.perf_counter()
        pipe = load(model, device=device)
        _sync(device)
        out["second_load_s"] = time.perf_counter() - t0
    if warm:
        from newbie.pipeline.load import warm_up

        out["warm_s"] = warm_up(pipe)
    negative = pipe.spec.sampling.negative
    t0 = time.perf_counter()
    pipe.embed([prompt], [])
    _sync(device)
    out["first_encode_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pipe.embed([prompt + ", again"], [])
    _sync(device)
    out["second_encode_s"] = time.perf_counter() - t0
    pipe.embed([negative], [])
    marks = [time.perf_counter()]

    def tick(info):
        _sync(device)
        marks.append(time.perf_counter())

    pipe.generate(prompt, negative=negative, seed=0, steps=4, width=size, height=size, progress=tick)
    steps = [b - a for a, b in zip(marks, marks[1:])][:4]
    out["step_s"] = steps
    out["first_step_s"] = steps[0]
    out["later_step_s"] = sorted(steps[1:])[len(steps[1:]) // 2] if len(steps) > 1 else None
    return out


def probe_peer(path: str, device: str, which: str) -> dict:
    """A DiT loaded in a fresh process: diffusers' Lumina2 at our shapes with device_map (path: its folder),
    or newbie's load_dit of the model's own transformer (path: the model folder)."""
    import torch

    t0 = time.perf_counter()
    if device.startswith("cuda"):
        torch.cuda.init()
    if which == "diffusers":
        try:
            from diffusers import Lumina2Transformer2DModel
        except ImportError as e:
            return {"reason": f"diffusers is not installed ({e})"}
        t1 = time.perf_counter()
        model = Lumina2Transformer2DModel.from_pretrained(path, torch_dtype=torch.bfloat16, device_map=device)
    else:
        from pathlib import Path

        from newbie.config import DiTConfig
        from newbie.loading.dit import load_dit

        t1 = time.perf_counter()
        model = load_dit(Path(path), DiTConfig(), torch.bfloat16, torch.device(device))
    _sync(device)
    t2 = time.perf_counter()
    params = sum(p.numel() for p in model.parameters())
    return {"import_s": t1 - t0, "load_s": t2 - t1, "params": params}


def write_peer(model: str, peer_dir: str, device: str) -> dict:
    """diffusers' Lumina2 at the shapes of `model`'s DiT (random weights, bf16), saved by diffusers."""
    import torch

    try:
        import diffusers  # noqa: F401
    except ImportError as e:
        return {"reason": f"diffusers is not installed ({e})"}
    from pathlib import Path

    from newbie.bench.speed import lumina2_like
    from newbie.config import DiTConfig
    from newbie.loading.dit import config_from_json, dit_source

    t0 = time.perf_counter()
    _, cfg_path = dit_source(Path(model))
    cfg = config_from_json(cfg_path, DiTConfig()) if cfg_path else DiTConfig()
    with torch.device(device):
        peer = lumina2_like(cfg).to(torch.bfloat16)
    peer.save_pretrained(peer_dir, safe_serialization=True)
    return {"write_s": time.perf_counter() - t0}


def device_name(device: str) -> dict:
    import torch

    name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "cpu"
    return {"device": name, "torch": torch.__version__}


PROBES = {"load": probe_load, "peer": probe_peer, "write_peer": write_peer, "device": device_name}


def main(argv: list[str]) -> int:
    what, kwargs = argv[0], json.loads(argv[1])
    out = PROBES[what](**kwargs)
    print("@@" + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

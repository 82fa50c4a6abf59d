"""CFG-parallel speed-up: one image, the conditional and unconditional branches on two GPUs, against the
normal pipeline on one GPU, in the same run. CFG on every step (cfg_trunc = 1.0).

    torchrun --nproc_per_node 2 bench/cfg_parallel.py                # 2 GPUs, NCCL, full-size random weights
    torchrun --nproc_per_node 2 bench/cfg_parallel.py --tiny         # dry run: CPU, gloo, the tiny checkpoint

The full-size checkpoint (random weights at the real shapes) is written like bench/gpu_check.py does, to the
same --workdir, so a checkpoint left by gpu_check is reused. Writes cfg-parallel.json to $OUT (or the current
folder): device, date, torch, size, seconds_1gpu, seconds_2gpu, speedup, identical (2-GPU latents equal to the
1-GPU latents bit for bit) and more. NVLink multicast (NVLS) is kept off: NCCL_NVLS_ENABLE=0.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import date, timedelta
from pathlib import Path

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # before torch.distributed reads it

import torch
import torch.distributed as dist

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "src"))
sys.path.insert(0, str(BENCH))

TINY_PROMPT = (
    "<character_1> <n>$character_1$</n> <gender>1girl</gender> <appearance>red_hair, blue_eyes"
    "</appearance> </character_1> <general_tags> <count>1girl</count> </general_tags>"
)


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="CPU dry run with gloo and the tiny test checkpoint")
    ap.add_argument(
        "--workdir", help="checkpoint folder (default /tmp/newbie-full, or /tmp/newbie-tiny-cfgp)"
    )
    ap.add_argument("--size", type=int, help="image side (default 1024; 128 with --tiny)")
    ap.add_argument("--steps", type=int, help="sampler steps (default 18; 4 with --tiny)")
    ap.add_argument(
        "--repeats", type=int, help="timed images per setting, median reported (default 3; 1 --tiny)"
    )
    args = ap.parse_args()
    args.workdir = Path(args.workdir or ("/tmp/newbie-tiny-cfgp" if args.tiny else "/tmp/newbie-full"))
    args.size = args.size or (128 if args.tiny else 1024)
    args.steps = args.steps or (4 if args.tiny else 18)
    args.repeats = args.repeats or (1 if args.tiny else 3)
    return args


def write_checkpoint(args) -> dict:
    """Rank 0, before the process group exists (rank 1 waits in the rendezvous meanwhile)."""
    if (args.workdir / "vae" / "config.json").exists():
        return {"checkpoint": "reused"}
    if args.tiny:
        from newbie.demo.tiny import write_tiny_checkpoint

        write_tiny_checkpoint(args.workdir, seed=0)
        return {"checkpoint": "tiny, written"}
    from gpu_check import write_full_size

    return {"checkpoint": "full size, written", **write_full_size(args.workdir)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def main() -> None:
    args = parse_args()
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if world != 2:
        sys.exit(
            "run under torchrun with 2 processes: torchrun --nproc_per_node 2 bench/cfg_parallel.py [--tiny]"
        )
    if args.tiny:
        device, backend, dtype = torch.device("cpu"), "gloo", "fp32"
        torch.set_num_threads(1)  # two processes share the CPU
    else:
        device, backend, dtype = torch.device("cuda", local_rank), "nccl", "bf16"
        torch.cuda.set_device(device)
    res = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "gpus": world if device.type == "cuda" else 0,
        "backend": backend,
        "date": date.today().isoformat(),
        "torch": torch.__version__,
        "NCCL_NVLS_ENABLE": os.environ.get("NCCL_NVLS_ENABLE"),
        "weights": "tiny test checkpoint" if args.tiny else "random weights at the real shapes",
    }
    if rank == 0:
        res.update(write_checkpoint(args))
    dist.init_process_group(backend, timeout=timedelta(minutes=30))
    # init returns before every rank has joined (torchrun's agent store; NCCL connects lazily): an explicit
    # barrier makes rank 1 wait until rank 0 has written the checkpoint
    dist.barrier(device_ids=[device.index]) if device.type == "cuda" else dist.barrier()

    import newbie
    from newbie.parallel import cfg_parallel

    pipe = newbie.load(args.workdir, device=str(device), dtype=dtype)
    if args.tiny:
        prompt = TINY_PROMPT
    else:
        from gpu_check import long_xml_prompt

        prompt = long_xml_prompt()
    settings = dict(seed=42, steps=args.steps, cfg=5.0, cfg_trunc=1.0, width=args.size, height=args.size)
    res.update(
        size=f"{args.size}x{args.size}",
        steps=args.steps,
        cfg=5.0,
        cfg_trunc=1.0,
        sampler=pipe.spec.sampling.sampler,
        dtype=dtype,
        repeats=args.repeats,
        caption_tokens=pipe.text.count_tokens(prompt),
        negative_tokens=pipe.text.count_tokens(""),
        cfg_batching_1gpu=getattr(pipe, "cfg_batching", "batched"),
    )
    branches = cfg_parallel.Branches(dist.get_rank())  # torchrun's default group of two

    # warm-up at a small size (kernel selection), one GPU then both
    small = {**settings, "steps": 2, "width": 256, "height": 256}
    if rank == 0:
        pipe.generate(prompt, **small)
    dist.barrier()
    cfg_parallel.generate(pipe, pipe.request(prompt, **small), branches)

    # one GPU: the normal pipeline on rank 0, rank 1 idle
    one_gpu, lat_1 = [], None
    if rank == 0:
        for _ in range(args.repeats):
            seconds, gen = timed(lambda: pipe.generate(prompt, **settings), device)
            one_gpu.append(seconds)
        lat_1, image_1, res["timings_1gpu"] = gen.latents, gen.images[0], gen.timings
    dist.barrier()

    # two GPUs: both ranks, rank 0 decodes
    two_gpu = []
    for _ in range(args.repeats):
        dist.barrier()
        seconds, gen = timed(
            lambda: cfg_parallel.generate(pipe, pipe.request(prompt, **settings), branches), device
        )
        two_gpu.append(seconds)
    _, lat_mine, _ = cfg_parallel.sample(pipe, pipe.request(prompt, **settings), branches)
    parts = [torch.empty_like(lat_mine) for _ in range(2)]
    dist.all_gather(parts, lat_mine.contiguous())

    if rank == 0:
        lat_2, image_2 = gen.latents, gen.images[0]
        res["timings_2gpu"] = gen.timings
        res["seconds_1gpu_runs"], res["seconds_2gpu_runs"] = one_gpu, two_gpu
        res["seconds_1gpu"], res["seconds_2gpu"] = statistics.median(one_gpu), statistics.median(two_gpu)
        res["speedup"] = res["seconds_1gpu"] / res["seconds_2gpu"]
        res["identical"] = bool(torch.equal(lat_1, lat_2))
        res["identical_images"] = image_1.tobytes() == image_2.tobytes()
        res["ranks_identical"] = bool(torch.equal(parts[0], parts[1]))
        res["max_abs_diff_latents"] = float((lat_1 - lat_2).abs().max())
        res["latent_finite"] = bool(torch.isfinite(lat_2).all())
        out_dir = Path(os.environ.get("OUT", "."))
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "cfg-parallel.json").write_text(json.dumps(res, indent=1))
        image_2.save(out_dir / "cfg-parallel.png")
        print(json.dumps(res, indent=1), flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

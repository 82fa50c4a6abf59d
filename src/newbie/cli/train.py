"""`newbie train lora DATA_DIR --out FILE.safetensors`: train a LoRA on the engine's own model
(newbie.train, docs/training.md). Exit 2 for bad input (a bad file is named), 1 for a failed run, 130 on
Ctrl-C after the state is saved for --resume."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train adapters on the loaded model")
    sub = p.add_subparsers(dest="train_command", required=True)
    t = sub.add_parser(
        "lora",
        help="a folder of images with .txt/.xml captions -> a LoRA .safetensors",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    t.add_argument(
        "data_dir", help="images with same-stem .txt (tags) or .xml captions; kohya N_name/ folders"
    )
    t.add_argument("--out", required=True, help="the LoRA file to write (.safetensors)")
    t.add_argument("--steps", type=int, default=1000)
    t.add_argument("--rank", type=int, default=16)
    t.add_argument("--alpha", type=float, help="LoRA alpha (default: = rank, scale 1)")
    t.add_argument("--lr", type=float, default=1e-4)
    t.add_argument("--batch", type=int, default=1)
    t.add_argument("--resolution", type=int, help="training side in px (default: the model's trained size)")
    t.add_argument(
        "--targets",
        default="default",
        help="'default' (attention.qkv, attention.out, feed_forward.w2, time_text_embed.1, "
        "clip_text_pooled_proj.1), 'full' (adds feed_forward.w1/w3, adaLN_modulation.1) or a comma list",
    )
    t.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (0: at the end)")
    t.add_argument("--sample-every", type=int, default=0, help="sample images every N steps (0: at the end)")
    t.add_argument(
        "--sample-prompt",
        action="append",
        default=[],
        help="prompt for samples (repeatable; default: first caption)",
    )
    t.add_argument("--sample-seeds", default="0,1", help="fixed seeds of the samples")
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint beside --out")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--format", dest="fmt", choices=("comfy", "kohya"), default="comfy", help="key names")
    t.add_argument("--save-dtype", choices=("bf16", "fp16", "fp32"), default="bf16")
    t.add_argument("--optimizer", choices=("adamw", "adamw8bit"), default="adamw")
    t.add_argument(
        "--grad-checkpointing",
        choices=("auto", "on", "off"),
        default="auto",
        help="recompute block activations in backward (auto: on for CUDA)",
    )
    t.add_argument("--cache-dir", help="where encoded captions and latents are kept (default: beside --out)")
    t.add_argument("--model", help="model folder or transformer file (default: the embedded demo model)")
    t.add_argument("--text-encoder", help="Gemma3 folder or ComfyUI file")
    t.add_argument("--clip-model", help="Jina CLIP v2 folder or ComfyUI file")
    t.add_argument("--vae", help="VAE folder or single file")
    t.add_argument("--comfy-dir", help="a ComfyUI models/ folder supplying the components not given")
    t.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    t.add_argument("--vram", help="GPU memory cap for the whole run, e.g. 12GB")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=run)


def run(args) -> int:
    from newbie.errors import NewbieError
    from newbie.memory.planner import parse_vram
    from newbie.train.dataset import scan
    from newbie.train.loop import TrainConfig, train_lora
    from newbie.train.lora import parse_targets

    try:
        seeds = tuple(int(s) for s in args.sample_seeds.split(",") if s.strip())
    except ValueError:
        raise NewbieError(
            f"--sample-seeds must be comma-separated integers, got '{args.sample_seeds}'"
        ) from None
    cfg = TrainConfig(
        data_dir=Path(args.data_dir),
        out=Path(args.out),
        steps=args.steps,
        rank=args.rank,
        alpha=args.alpha,
        lr=args.lr,
        batch=args.batch,
        resolution=args.resolution,
        targets=parse_targets(args.targets),
        save_every=args.save_every,
        sample_every=args.sample_every,
        sample_prompts=tuple(args.sample_prompt),
        sample_seeds=seeds,
        resume=args.resume,
        seed=args.seed,
        fmt=args.fmt,
        save_dtype=args.save_dtype,
        optimizer=args.optimizer,
        grad_checkpointing={"auto": None, "on": True, "off": False}[args.grad_checkpointing],
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        vram_gib=parse_vram(args.vram) if args.vram else None,
    )
    items = scan(cfg.data_dir)  # bad data fails before the model is read
    pipe = load_for_training(args)
    result = train_lora(pipe, cfg, None if args.quiet else Reporter(), items=items)
    if not args.quiet:
        print(
            f"{result.out}: {result.steps} steps, final loss {result.losses[-1]:.4f}, "
            f"{result.seconds:.0f} s; loss curve {result.curve}"
        )
    return 0


def load_for_training(args):
    """The model read into CPU memory; the small VAE goes to the device now, the text encoders visit it only to
    encode the captions once (newbie.train.cache), and the DiT goes there after that (train_lora), so the
    encoders and the DiT never share the GPU."""
    import torch

    from newbie import load
    from newbie.device import resolve_device

    dev = resolve_device(args.device)
    pipe = load(
        args.model,
        device="cpu",
        dtype="bf16" if dev.type == "cuda" else "fp32",
        text_encoder=args.text_encoder,
        clip_model=args.clip_model,
        vae=args.vae,
        comfy_dir=args.comfy_dir,
    )
    if dev.type == "cuda":
        pipe.codec.vae.to(dev)
        pipe.device = dev
        torch.cuda.empty_cache()
    return pipe


class Reporter:
    """Progress on stderr: the caching counts, then a bar with the loss and the ETA."""

    def __init__(self, stream=None, width: int = 24):
        self.stream, self.width = stream or sys.stderr, width
        self.tty = self.stream.isatty()
        self.last = 0.0
        self.avg: float | None = None

    def __call__(self, info: dict) -> None:
        if info["phase"] == "cache":
            if info["done"] == info["total"]:
                self._line(f"encoded {info['total']} {info['what']}", end=True)
            return
        if info["phase"] != "step":
            return
        step, steps = info["step"], info["steps"]
        self.avg = info["loss"] if self.avg is None else 0.95 * self.avg + 0.05 * info["loss"]
        now = time.perf_counter()
        if step != steps and now - self.last < (0.2 if self.tty else 30.0):
            return
        self.last = now
        done = step - info["first"]
        rate = done / info["elapsed"] if info["elapsed"] > 0 else 0.0
        eta = (steps - step) / rate if rate > 0 else 0.0
        filled = int(self.width * step / steps)
        self._line(
            f"train {step:>5}/{steps} [{'#' * filled}{'.' * (self.width - filled)}] "
            f"loss {self.avg:.4f}  {rate:5.2f} it/s  ETA {eta:5.0f}s",
            end=step == steps,
        )

    def _line(self, text: str, end: bool) -> None:
        if self.tty:
            self.stream.write("\r" + text + ("\n" if end else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

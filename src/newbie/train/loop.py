"""`train_lora`: a folder of captioned images -> a LoRA file, on the engine's own loaded model.

Order of work: scan and check every file (bad data fails before anything is computed), encode captions and
latents once into the on-disk cache (the encoders then leave the GPU), freeze the DiT, attach the LoRA layers,
checkpoint the repeated blocks, then step. All training randomness (t, noise, caption dropout) comes from one
CPU generator and the data order from (seed, epoch), so a resumed run continues exactly where the saved one
stopped."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from newbie.errors import NewbieError
from newbie.train import checkpoint, lorafile, recompute
from newbie.train.cache import Entry, encode_dataset
from newbie.train.checkpoint import RunState
from newbie.train.dataset import bucket_for, make_buckets, scan, tag_frequency
from newbie.train.lora import DEFAULT_TARGETS, LoraSet, target_layers
from newbie.train.objective import Batch, Blank, flow_loss
from newbie.train.samples import draw_samples, encode_prompts, loss_curve


@dataclass
class TrainConfig:
    data_dir: Path
    out: Path
    steps: int = 1000
    rank: int = 16
    alpha: float | None = None  # None: alpha = rank (scale 1)
    lr: float = 1e-4
    batch: int = 1
    resolution: int | None = None  # None: the model's trained size (1024; the demo model 128)
    targets: tuple[str, ...] = DEFAULT_TARGETS
    save_every: int = 0  # 0: only at the end (and on Ctrl-C)
    sample_every: int = 0  # 0: samples only at the end when sample_prompts are given
    sample_prompts: tuple[str, ...] = ()  # default: the first image's caption
    sample_seeds: tuple[int, ...] = (0, 1)
    resume: bool = False
    seed: int = 0
    fmt: str = "comfy"  # lorafile.FORMATS
    save_dtype: str = "bf16"
    optimizer: str = "adamw"  # or "adamw8bit"
    grad_checkpointing: bool | None = None  # None: on for CUDA
    cache_dir: Path | None = None  # None: <out stem>.cache beside the output
    vram_gib: float | None = None  # a hard GPU memory cap for the run
    clip_grad: float = 1.0
    extra_meta: dict = field(default_factory=dict)

    def identity(self, items) -> dict:
        """What must match for --resume to continue the same run."""
        keep = ("rank", "alpha", "lr", "batch", "resolution", "targets", "seed", "optimizer")
        d = {k: v for k, v in asdict(self).items() if k in keep}
        d["targets"] = list(d["targets"])
        d["data"] = [f"{it.image}|{it.repeats}" for it in items]
        return d


@dataclass
class TrainResult:
    out: Path
    steps: int
    losses: list[float]
    samples: list[Path]
    curve: Path | None
    seconds: float


def default_resolution(spec) -> int:
    return int(round(spec.trained_pixels**0.5 / 16)) * 16


def train_lora(pipe, cfg: TrainConfig, report=None, items=None) -> TrainResult:
    """report(info): phase "cache" {what, done, total}, phase "step" {step, steps, loss, first, elapsed},
    phase "samples"/"saved" {paths}."""
    report = report or (lambda info: None)
    t_start = time.perf_counter()
    data = _prepare(pipe, cfg, items or scan(cfg.data_dir), report)
    device, dit = pipe.device, pipe.dit.requires_grad_(False).eval().to(pipe.device)
    dtype = next(dit.parameters()).dtype
    alpha = float(cfg.rank if cfg.alpha is None else cfg.alpha)
    lora = LoraSet(target_layers(dit, cfg.targets), cfg.rank, alpha, cfg.seed).to(device)
    run = RunState(
        lora, _optimizer(cfg, list(lora.parameters())), data.counts, data.sizes, cfg.batch, cfg.seed
    )
    if cfg.resume:
        run.restore(data.state)
    samples_dir, samples = cfg.out.with_name(cfg.out.stem + "-samples"), []
    use_ckpt = device.type == "cuda" if cfg.grad_checkpointing is None else cfg.grad_checkpointing
    wrapped = recompute.enable(dit.blocks()) if use_ckpt else []
    lora.attach(dit)
    t0, first = time.perf_counter(), run.step
    try:
        while run.step < cfg.steps:
            loss = flow_loss(dit, _collate(data.entries, run.next_ids()), data.blank, run.gen, device, dtype)
            loss.backward()
            if cfg.clip_grad:
                torch.nn.utils.clip_grad_norm_(lora.parameters(), cfg.clip_grad)
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
            run.step += 1
            run.losses.append(float(loss.detach()))
            elapsed = time.perf_counter() - t0
            report(
                dict(
                    phase="step",
                    step=run.step,
                    steps=cfg.steps,
                    loss=run.losses[-1],
                    first=first,
                    elapsed=elapsed,
                )
            )
            if cfg.save_every and run.step % cfg.save_every == 0 and run.step < cfg.steps:
                checkpoint.save(data.ckpt, run.snapshot(data.ident))
                report(dict(phase="saved", paths=[data.ckpt]))
            if cfg.sample_every and run.step % cfg.sample_every == 0 and run.step < cfg.steps:
                new = draw_samples(pipe, data.sample_embeds, list(cfg.sample_seeds), samples_dir, run.step)
                samples += new
                report(dict(phase="samples", paths=new))
    except KeyboardInterrupt:
        checkpoint.save(data.ckpt, run.snapshot(data.ident))  # nothing trained is lost: --resume goes on
        raise
    finally:
        recompute.disable(wrapped)
    checkpoint.save(data.ckpt, run.snapshot(data.ident))
    lorafile.write(cfg.out, lora, data.facts | {"steps": run.step}, cfg.fmt, cfg.save_dtype)
    if data.sample_embeds:
        samples += draw_samples(pipe, data.sample_embeds, list(cfg.sample_seeds), samples_dir, run.step)
    lora.detach()
    curve = cfg.out.with_name(cfg.out.stem + "-loss.png")
    loss_curve(run.losses, curve)
    return TrainResult(cfg.out, run.step, run.losses, samples, curve, time.perf_counter() - t_start)


@dataclass
class _Data:
    entries: list[Entry]
    blank: Blank
    counts: list[int]
    sizes: list[tuple[int, int]]
    sample_embeds: dict
    ident: dict
    ckpt: Path
    state: dict | None
    facts: dict


def _prepare(pipe, cfg: TrainConfig, items, report) -> _Data:
    """Check the settings and the checkpoint, then encode the data (or read it from the cache)."""
    _check(cfg)
    device = pipe.device
    res = cfg.resolution or default_resolution(pipe.spec)
    buckets = make_buckets(res, pipe.spec.max_aspect, 64 if res >= 512 else 16)
    sizes = [bucket_for(it.size, buckets) for it in items]
    ident = cfg.identity(items) | {"resolution": res}
    ckpt = checkpoint.path_for(cfg.out)
    if ckpt.exists() and not cfg.resume:
        raise NewbieError(f"{ckpt} exists from an earlier run: pass --resume to continue it, or delete it")
    if cfg.resume and not ckpt.exists():
        raise NewbieError(f"--resume: no checkpoint {ckpt} to continue from")
    state = checkpoint.load(ckpt, ident) if cfg.resume else None
    if cfg.vram_gib and device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory / 2**30
        torch.cuda.set_per_process_memory_fraction(
            min(1.0, cfg.vram_gib / total),
            device.index if device.index is not None else torch.cuda.current_device(),
        )
    cache_dir = cfg.cache_dir or cfg.out.with_name(cfg.out.stem + ".cache")
    entries, blank = encode_dataset(
        pipe,
        items,
        sizes,
        cache_dir,
        device,
        lambda what, d, n: report(dict(phase="cache", what=what, done=d, total=n)),
    )
    sampling = cfg.sample_every or cfg.sample_prompts
    prompts = list(cfg.sample_prompts) or [items[0].caption]
    facts = dict(
        base_sha256=pipe.model_hash,
        resolution=res,
        images=len(items),
        tag_frequency=tag_frequency(items),
        lr=cfg.lr,
        batch=cfg.batch,
        seed=cfg.seed,
        targets=cfg.targets,
        model_name=pipe.spec.name,
        max_steps=cfg.steps,
        **cfg.extra_meta,
    )
    return _Data(
        entries,
        blank,
        [it.repeats for it in items],
        sizes,
        encode_prompts(pipe, prompts, device) if sampling else {},
        ident,
        ckpt,
        state,
        facts,
    )


def _check(cfg: TrainConfig) -> None:
    for name in ("steps", "rank", "batch"):
        if getattr(cfg, name) < 1:
            raise NewbieError(f"--{name} must be >= 1, got {getattr(cfg, name)}")
    if not cfg.lr > 0:
        raise NewbieError(f"--lr must be > 0, got {cfg.lr}")
    if cfg.resolution is not None and (cfg.resolution % 16 or cfg.resolution < 16):
        raise NewbieError(f"--resolution {cfg.resolution} is not a positive multiple of 16")
    if cfg.fmt not in lorafile.FORMATS:
        raise NewbieError(f"--format must be one of {', '.join(lorafile.FORMATS)}, got '{cfg.fmt}'")
    if cfg.out.suffix != ".safetensors":
        raise NewbieError(f"--out {cfg.out}: the LoRA file must end in .safetensors")


def _collate(entries: list[Entry], ids: list[int]) -> Batch:
    """Stack one bucket's entries, right-padding captions to the longest (padding masked)."""
    picked = [entries[i] for i in ids]
    n = max(e.cap.shape[0] for e in picked)
    cap = torch.stack([F.pad(e.cap, (0, 0, 0, n - e.cap.shape[0])) for e in picked])
    mask = torch.stack([torch.arange(n) < e.cap.shape[0] for e in picked])
    return Batch(torch.stack([e.x1 for e in picked]), cap, mask, torch.stack([e.pooled for e in picked]))


def _optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    """LoRA weights and optimizer state in fp32; "adamw8bit" keeps the two moments in 8 bits (torchao or
    bitsandbytes, whichever is installed)."""
    kw = dict(lr=cfg.lr, betas=(0.9, 0.999), weight_decay=0.01)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, **kw)
    if cfg.optimizer == "adamw8bit":
        try:
            from torchao.optim import AdamW8bit
        except ImportError:
            try:
                from bitsandbytes.optim import AdamW8bit
            except ImportError:
                raise NewbieError(
                    "--optimizer adamw8bit needs torchao or bitsandbytes (pip install torchao)"
                ) from None
        return AdamW8bit(params, **kw)
    raise NewbieError(f"--optimizer must be adamw or adamw8bit, got '{cfg.optimizer}'")

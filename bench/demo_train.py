"""Train the embedded demo model: the VAE on toy images, then the NextDiT by flow matching (spec §4.1).

Text encoders are tiny Gemma3 / Jina v3 models with frozen random weights (fixed seeds) and a word-level
tokenizer of the toy vocabulary. Everything is saved in the official folder layout and key names and read
back through newbie.load() for the final evaluation. A developer tool (it makes src/newbie/demo_model),
so it lives outside the package.

    python bench/demo_train.py --work /tmp/demo --out src/newbie/demo_model [--vae-minutes 2.5] [--dit-minutes 6]

Each phase is time-boxed and checkpoints to --work every --ckpt-every steps; running again resumes.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import json
import math
import random
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from newbie.config import TextConfig  # noqa: E402 - after the path to the package
from newbie.demo.tiny import TinySizes, tiny_components, tiny_dit_config  # noqa: E402
from newbie.demo.world import held_out_triples, random_scene, render, tag_caption, xml_caption  # noqa: E402
from newbie.model.text import TextEncoders  # noqa: E402
from newbie.sampling.schedules import resolution_shift  # noqa: E402

SIZES = TinySizes(
    gemma_hidden=64, gemma_layers=3, jina_hidden=32, jina_layers=2, vae_channels=(32, 64, 64, 64)
)
DIT = dict(
    dim=192,
    n_layers=8,
    n_refiner_layers=2,
    n_heads=6,
    n_kv_heads=3,
    axes_dims=(8, 12, 12),
    axes_lens=(512, 32, 32),
    multiple_of=64,
)
DEMO_SPEC = {
    "name": "newbie-toy-demo",
    "trained_pixels": 128 * 128,
    "max_aspect": 1.0,
    "max_side": 512,
    "sampling": {
        "width": 128,
        "height": 128,
        "steps": 20,
        "sampler": "euler",
        "cfg": 4.0,
        "cfg_trunc": 1.0,
        "shift": 3.0,
        "renorm_cfg": 0.0,
        "negative": "",
    },
}


def log(state: dict, **kv) -> None:
    kv["t"] = round(time.perf_counter() - state["t0"], 1)
    print(json.dumps(kv), flush=True)
    state.setdefault("history", []).append(kv)


def scenes_batch(rng: random.Random, n: int, exclude) -> list:
    return [random_scene(rng, exclude) for _ in range(n)]


# -- phase 1: VAE --


def train_vae(vae, args, state, device) -> dict:
    ckpt = Path(args.work) / "vae.pt"
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    step = 0
    if ckpt.exists():
        saved = torch.load(ckpt, map_location=device)
        vae.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        step = saved["step"]
        if saved.get("done"):
            return saved["stats"]
    rng = random.Random(1000 + step)
    vae.train()
    deadline = time.perf_counter() + args.vae_minutes * 60
    while time.perf_counter() < deadline:
        x = render(scenes_batch(rng, args.vae_batch, None), device) * 2 - 1
        mean, logvar = vae.moments(x).chunk(2, dim=1)
        logvar = logvar.clamp(
            -30.0, 20.0
        )  # the diagonal Gaussian posterior, as diffusers' VAE training has it
        rec = vae.decode(mean + torch.exp(0.5 * logvar) * torch.randn_like(mean))
        rec_loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=[1, 2, 3]).mean() / x[0].numel()
        loss = rec_loss + args.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 200 == 0:
            log(state, phase="vae", step=step, rec=rec_loss.item(), kl=kl.item())
        if step % args.ckpt_every == 0:
            torch.save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step}, ckpt)
    vae.eval()
    stats = vae_stats(vae, device)
    stats["steps"] = step
    torch.save(
        {"model": vae.state_dict(), "opt": opt.state_dict(), "step": step, "done": True, "stats": stats}, ckpt
    )
    log(state, phase="vae-done", **stats)
    return stats


@torch.no_grad()
def vae_stats(vae, device) -> dict:
    """Reconstruction PSNR on fresh scenes, and the latent mean/std that set the VAE's shift/scale."""
    rng = random.Random(7)
    x = render(scenes_batch(rng, 256, None), device) * 2 - 1
    z = vae.encode(x)
    rec = vae.decode(z).clamp(-1, 1)
    mse = F.mse_loss((rec + 1) / 2, (x + 1) / 2).item()
    return {"psnr": 10 * math.log10(1 / mse), "latent_mean": z.mean().item(), "latent_std": z.std().item()}


# -- phase 2: DiT --


def caption_for(scene, rng: random.Random) -> str:
    # XML for most samples; plain tag lists for some, single figures mostly (they bind unambiguously)
    if rng.random() < (0.3 if len(scene.characters) == 1 else 0.1):
        return tag_caption(scene)
    return xml_caption(scene)


@torch.no_grad()
def build_pool(
    n: int, vae, text: TextEncoders, exclude, seed: int, device, scale: float, shift: float
) -> dict:
    """Encode n training scenes once (latents, Gemma features, Jina pooled): the step loop then only runs the DiT."""
    rng = random.Random(seed)
    lat, feats, masks, pooled = [], [], [], []
    for start in range(0, n, 1024):
        scenes = scenes_batch(rng, min(1024, n - start), exclude)
        z = vae.encode(render(scenes, device) * 2 - 1)
        lat.append((z - shift) * scale)
        emb = text.encode([caption_for(s, rng) for s in scenes])
        feats.append(emb.cap_feats.to(torch.bfloat16))
        masks.append(emb.cap_mask)
        pooled.append(emb.pooled.float())
    width = max(f.shape[1] for f in feats)

    def pad(t, v=0):
        return F.pad(t, (0, 0, 0, width - t.shape[1]) if t.ndim == 3 else (0, width - t.shape[1]), value=v)

    blank = text.encode([""])
    return {
        "x1": torch.cat(lat),
        "cap": torch.cat([pad(f) for f in feats]),
        "mask": torch.cat([pad(m, False) for m in masks]),
        "pooled": torch.cat(pooled),
        "blank_cap": blank.cap_feats[0, 0].to(torch.bfloat16),
        "blank_pooled": blank.pooled[0].float(),
    }


def pool_batch(pool: dict, b: int, gen: torch.Generator, device) -> tuple:
    idx = torch.randint(0, pool["x1"].shape[0], (b,), generator=gen).to(device)
    x1, cap, mask, pooled = (
        pool["x1"][idx],
        pool["cap"][idx].clone(),
        pool["mask"][idx].clone(),
        pool["pooled"][idx].clone(),
    )
    r = torch.rand(b, generator=gen).to(device)
    drop_gemma = r < 0.15  # official dropout: Gemma sees "", Jina still reads the caption
    drop_both = r < 0.05  # both blank: the unconditional branch at inference
    cap[drop_gemma] = 0
    cap[drop_gemma, 0] = pool["blank_cap"]
    mask[drop_gemma] = False
    mask[drop_gemma, 0] = True
    pooled[drop_both] = pool["blank_pooled"]
    n = int(mask.sum(1).max())
    n = (n + 7) // 8 * 8
    return x1, cap[:, :n], mask[:, :n], pooled


def train_dit(dit, vae, text: TextEncoders, args, state, device, scale: float, shift: float) -> dict:
    ckpt = Path(args.work) / "dit.pt"
    ema = copy.deepcopy(dit).requires_grad_(False)
    opt = torch.optim.AdamW(dit.parameters(), lr=args.dit_lr, weight_decay=0.0, betas=(0.9, 0.99))
    step = 0
    if ckpt.exists():
        saved = torch.load(ckpt, map_location=device)
        dit.load_state_dict(saved["model"])
        ema.load_state_dict(saved["ema"])
        opt.load_state_dict(saved["opt"])
        step = saved["step"]
    pool = build_pool(args.pool, vae, text, held_out_triples(), 2000, device, scale, shift)
    log(state, phase="pool", scenes=args.pool, caption_tokens=pool["cap"].shape[1])
    gen = torch.Generator().manual_seed(3000 + step)
    # training-time resolution shift (spec §4.2): exp(mu) from the image token count
    tokens = (128 // 8 // dit.cfg.patch_size) ** 2
    t_shift = resolution_shift(tokens)
    dit.train()
    deadline = time.perf_counter() + args.dit_minutes * 60
    ema_loss = None
    while time.perf_counter() < deadline:
        x1, cap, mask, pooled = pool_batch(pool, args.dit_batch, gen, device)
        x0 = torch.randn_like(x1)
        t = torch.sigmoid(torch.randn(x1.shape[0], device=device))  # logit-normal, t = 0 is noise
        sigma = 1 - t
        sigma = t_shift * sigma / (1 + (t_shift - 1) * sigma)
        t = 1 - sigma
        tt = t[:, None, None, None]
        xt = tt * x1 + (1 - tt) * x0
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            v = dit(xt, t, cap, mask, pooled)
        loss = F.mse_loss(v.float(), x1 - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dit.parameters(), 1.0)
        lr = args.dit_lr * min(1.0, (step + 1) / 500)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        step += 1
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.parameters()), list(dit.parameters()), 1 - decay)
        if step % 50 == 0:
            ema_loss = loss.item() if ema_loss is None else 0.9 * ema_loss + 0.1 * loss.item()
        if step % 500 == 0:
            log(state, phase="dit", step=step, loss=round(ema_loss, 5), lr=lr)
        if step % args.ckpt_every == 0:
            torch.save(
                {"model": dit.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step},
                ckpt,
            )
    torch.save(
        {"model": dit.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step}, ckpt
    )
    log(state, phase="dit-done", step=step, loss=ema_loss)
    dit.load_state_dict(ema.state_dict())
    return {"steps": step, "final_loss_ema": ema_loss, "train_shift": t_shift}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/newbie-demo-train")
    ap.add_argument("--out", default="src/newbie/demo_model")
    ap.add_argument("--vae-minutes", type=float, default=2.5)
    ap.add_argument("--dit-minutes", type=float, default=6.0)
    ap.add_argument("--vae-batch", type=int, default=64)
    ap.add_argument("--dit-batch", type=int, default=256)
    ap.add_argument("--vae-lr", type=float, default=1e-3)
    ap.add_argument("--dit-lr", type=float, default=5e-4)
    ap.add_argument("--vae-kl", type=float, default=1e-4)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--ckpt-every", type=int, default=1000)
    ap.add_argument("--pool", type=int, default=60000, help="training scenes encoded once up front")
    ap.add_argument("--eval-seeds", type=int, default=20)
    ap.add_argument(
        "--init-from", help="a saved demo model folder: keep its VAE and text encoders, continue its DiT"
    )
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    Path(args.work).mkdir(parents=True, exist_ok=True)
    state = {"t0": time.perf_counter()}

    dit, gemma, gemma_tok, jina, jina_tok, vae = tiny_components(
        seed=0, sizes=SIZES, dit_cfg=tiny_dit_config(SIZES, **DIT)
    )
    torch.manual_seed(0)
    dit = type(dit)(dit.cfg)  # default init for training (no test perturbation)
    gemma, jina, vae, dit = gemma.to(device), jina.to(device), vae.to(device), dit.to(device)
    text = TextEncoders(gemma, gemma_tok, jina, jina_tok, TextConfig())

    if args.init_from:
        from newbie.loading.dit import load_dit
        from newbie.loading.text import load_gemma, load_jina
        from newbie.loading.vae import load_vae

        src = Path(args.init_from)
        dit = load_dit(src, dit.cfg, torch.float32, device).requires_grad_(True)
        # the saved encoders, not a re-seeded build: another torch/transformers may initialise differently,
        # and the DiT being continued was trained on these exact features
        gemma = load_gemma(src / "text_encoder", torch.float32, device)
        jina = load_jina(src / "clip_model", torch.float32, device)
        text = TextEncoders(gemma, gemma_tok, jina, jina_tok, TextConfig())
        vae, vcfg = load_vae(src / "vae", torch.float32, device)
        vae_info = (
            json.loads((src / "training.json").read_text())["vae"] if (src / "training.json").exists() else {}
        )
        vae_info.update(latent_mean=vcfg.shift_factor, latent_std=1 / vcfg.scaling_factor, init_from=str(src))
    else:
        vae_info = train_vae(vae, args, state, device)
    shift, scale = vae_info["latent_mean"], 1.0 / vae_info["latent_std"]
    vae.config = dataclasses.replace(vae.config, scaling_factor=round(scale, 4), shift_factor=round(shift, 4))
    vae.requires_grad_(False)
    dit_info = train_dit(dit, vae, text, args, state, device, round(scale, 4), round(shift, 4))
    previous = []
    if args.init_from and (Path(args.init_from) / "training.json").exists():
        before = json.loads((Path(args.init_from) / "training.json").read_text())
        previous = before.get("previous_runs", []) + [
            {k: before.get(k) for k in ("dit", "accuracy", "minutes", "args")}
        ]
        dit_info["steps_total"] = dit_info["steps"] + sum(r["dit"]["steps"] for r in previous)

    from newbie.loading.writer import save_model

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    save_model(
        out, dit.cpu().eval(), gemma.cpu(), gemma_tok, jina.cpu(), jina_tok, vae.cpu().eval(), dtype=None
    )
    # DiT in bf16 like the real checkpoint; encoders and VAE stay fp32 (small)
    from newbie.loading.writer import save_dit

    save_dit(out / "transformer", dit, torch.bfloat16)
    (out / "newbie_spec.json").write_text(json.dumps(DEMO_SPEC, indent=2))

    import newbie
    from newbie.demo.evaluate import evaluate, held_out_scenes

    pipe = newbie.load(out, device=str(device), dtype="fp32")
    accuracy = evaluate(pipe, held_out_scenes(), args.eval_seeds)
    report = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "date": datetime.date.today().isoformat(),
        "vae": vae_info,
        "dit": dit_info,
        "dit_params": sum(p.numel() for p in dit.parameters()),
        "accuracy": accuracy,
        "held_out_triples": sorted(held_out_triples()),
        "args": vars(args),
        "minutes": (time.perf_counter() - state["t0"]) / 60,
        "previous_runs": previous,
        "history": state.get("history", []),
    }
    (out / "training.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "history"}, indent=1))


if __name__ == "__main__":
    main()

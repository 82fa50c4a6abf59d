"""Adapter check for a CUDA machine (not collected by pytest; needs `peft`, which the device image has):

1. fp32, real widths: a LoRA saved by PEFT itself (`save_pretrained`) applied by newbie, unfused and fused,
   equals PEFT's own forward; removal gives the base output back bit for bit.
2. bf16, the real NewBie shapes at 1024x1024: time of one DiT forward without adapters, with an unfused and
   with a fused rank-32 LoRA on NewbieLoraTrainer's default targets, and the cost of fusing and restoring.

    PYTHONPATH=src python3 tests/adapters/device_check.py
"""

import json
import tempfile
import time
from pathlib import Path

import torch

from newbie.adapters import ActiveLora, Adapter, AdapterStack, linear_shapes
from newbie.adapters.deltas import LoraDelta
from newbie.config import DiTConfig
from newbie.model.dit import NextDiT

TARGETS = [
    "attention.qkv",
    "attention.out",
    "feed_forward.w2",
    "time_text_embed.1",
    "clip_text_pooled_proj.1",
]


def inputs(cfg, side, dtype):
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(1, cfg.in_channels, side, side, device="cuda", generator=g).to(dtype)
    cap = torch.randn(1, 77, cfg.cap_feat_dim, device="cuda", generator=g)
    pooled = torch.randn(1, cfg.clip_text_dim, device="cuda", generator=g)
    return x, torch.tensor([0.4], device="cuda"), cap, None, pooled


@torch.no_grad()
def peft_parity(folder: Path) -> dict:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    dit = NextDiT(DiTConfig(n_layers=3)).cuda().eval()
    args = inputs(dit.cfg, 32, torch.float32)
    base = dit(*args)
    peft = get_peft_model(dit, LoraConfig(r=8, lora_alpha=4, target_modules=TARGETS, init_lora_weights=False))
    want = dit(*args)  # PEFT swapped its LoRA layers into `dit`
    peft.save_pretrained(str(folder))
    dit = peft.unload()
    stack = AdapterStack()
    active = stack.resolve(dit, [folder])
    stack.activate(dit, active)
    unfused = dit(*args)
    stack.activate(dit, active, fused=True)
    fused = dit(*args)
    stack.clear()
    rel = lambda a: float((a - want).abs().max() / want.abs().max())  # noqa: E731
    out = dict(
        layers=len(active[0].adapter.deltas),
        scale=active[0].adapter.deltas["layers.0.attention.qkv"].scale,
        lora_change=float((want - base).abs().max() / base.abs().max()),
        unfused_rel_err=rel(unfused),
        fused_rel_err=rel(fused),
        restored_bit_exact=bool(torch.equal(dit(*args), base)),
    )
    assert out["unfused_rel_err"] < 1e-4 and out["fused_rel_err"] < 1e-4 and out["restored_bit_exact"], out
    return out


@torch.no_grad()
def timings() -> dict:
    torch.manual_seed(0)
    with torch.device("cuda"):
        dit = NextDiT(DiTConfig()).to(torch.bfloat16).eval()
    shapes = linear_shapes(dit)
    names = [n for n in shapes if any(n.endswith(t) for t in TARGETS)]
    deltas = {
        n: LoraDelta(torch.randn(32, shapes[n][1]) * 0.02, torch.randn(shapes[n][0], 32) * 0.02, 1.0)
        for n in names
    }
    active = [ActiveLora(Adapter(Path("synthetic"), "0" * 64, "", "lora", deltas), 0.8)]
    args = inputs(dit.cfg, 128, torch.bfloat16)  # 1024x1024 image

    def ms(n=5):
        dit(*args)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            y = dit(*args)
        torch.cuda.synchronize()
        return round((time.perf_counter() - t0) / n * 1e3, 1), y

    before = {k: v.clone() for k, v in dit.state_dict().items()}
    out = {"layers": len(names)}
    out["base_ms"], base = ms()
    stack = AdapterStack()
    stack.activate(dit, active)
    out["unfused_ms"], unfused = ms()
    t0 = time.perf_counter()
    stack.activate(dit, active, fused=True)
    torch.cuda.synchronize()
    out["fuse_s"] = round(time.perf_counter() - t0, 2)
    out["fused_ms"], fused = ms()
    t0 = time.perf_counter()
    stack.clear()
    torch.cuda.synchronize()
    out["restore_s"] = round(time.perf_counter() - t0, 2)
    out["restored_bit_exact"] = all(torch.equal(v, before[k]) for k, v in dit.state_dict().items())
    out["fused_vs_unfused_rel"] = float(
        (fused.float() - unfused.float()).abs().max() / unfused.float().abs().max()
    )
    out["lora_change_rel"] = float((unfused.float() - base.float()).abs().max() / base.float().abs().max())
    return out


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        print(
            json.dumps(
                {
                    "device": torch.cuda.get_device_name(),
                    "peft_parity": peft_parity(Path(tmp)),
                    "timings_1024": timings(),
                },
                indent=1,
            )
        )

"""Full-size check on a GPU: a real-layout checkpoint with RANDOM weights at the real shapes
(3.49B NextDiT_CLIP, Gemma3-4B text config, Jina v3 text tower, FLUX VAE) is written to disk, loaded through
newbie.load() and asked for a 1024x1024 image in bf16 with the official defaults.

Random weights measure load/speed/memory/numerics only, never picture quality.
Writes gpu-check.json to $OUT (or the current folder).

    python bench/gpu_check.py [--workdir /tmp/newbie-full] [--steps 18]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def gemma3_4b_text_config():
    """Spec §3.1: the Gemma3-4B text model's widths (one list: newbie.bench.random_checkpoint's)."""
    from newbie.bench.random_checkpoint import gemma3_4b_text_config as config

    return config()


def flux_vae():
    """The FLUX.1-dev VAE architecture (random weights), from the config newbie ships for ae.safetensors."""
    import json

    from newbie.loading.comfy import FLUX_VAE_CONFIG
    from newbie.model.autoencoder import AutoencoderConfig, AutoencoderKL

    return AutoencoderKL(AutoencoderConfig.from_dict(json.loads(FLUX_VAE_CONFIG.read_text())))


def write_full_size(root: Path) -> dict:
    from transformers import JinaEmbeddingsV3Config, JinaEmbeddingsV3Model

    from newbie.config import DiTConfig
    from newbie.demo.tiny import word_tokenizer
    from newbie.demo.vocab import toy_words
    from newbie.loading import writer
    from newbie.model.dit import NextDiT
    from newbie.model.gemma import Gemma, init_weights

    t0 = time.perf_counter()
    torch.manual_seed(0)
    words = toy_words() + [f"tag{i}" for i in range(2000)]
    writer.write_model_index(root)
    with torch.device("cuda"):
        dit = NextDiT(DiTConfig()).to(torch.bfloat16)
    writer.save_dit(root / "transformer", dit)
    n_dit = sum(p.numel() for p in dit.parameters())
    del dit
    cfg = gemma3_4b_text_config()
    with torch.device("cuda"):
        gemma = init_weights(Gemma(cfg)).to(torch.bfloat16)
    writer.save_gemma(root / "text_encoder", gemma, word_tokenizer(words, "gemma"))
    n_gemma = sum(p.numel() for p in gemma.parameters())
    del gemma
    jcfg = JinaEmbeddingsV3Config()
    with torch.device("cuda"):
        jina = JinaEmbeddingsV3Model(jcfg, add_pooling_layer=False).to(torch.bfloat16)
    writer.save_jina(root / "clip_model", jina, word_tokenizer(words, "jina"), lora_rank=4)
    n_jina = sum(p.numel() for p in jina.parameters())
    del jina
    vae = flux_vae()
    writer.save_vae(root / "vae", vae)
    torch.cuda.empty_cache()
    return {
        "write_s": time.perf_counter() - t0,
        "params_dit": n_dit,
        "params_gemma_text": n_gemma,
        "params_jina_text": n_jina,
        "params_vae": sum(p.numel() for p in vae.parameters()),
    }


def long_xml_prompt(n_tags: int = 180) -> str:
    tags = ", ".join(f"tag{i}" for i in range(n_tags))
    return (
        f"<character_1> <n>$character_1$</n> <gender>1girl</gender> <appearance>red_hair, blue_eyes</appearance> "
        f"<clothing>green_shirt</clothing> <position>left</position> </character_1> <general_tags> "
        f"<count>1girl</count> <background>white_background</background> <other>{tags}</other> </general_tags>"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="/tmp/newbie-full")
    ap.add_argument("--steps", type=int, default=18)
    args = ap.parse_args()
    out_dir = Path(os.environ.get("OUT", "."))
    import transformers

    import newbie

    res = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "date": date.today().isoformat(),
        "note": "random weights at the real shapes: load/speed/memory/numerics only, not picture quality",
    }
    root = Path(args.workdir)
    if not (root / "vae" / "config.json").exists():
        res.update(write_full_size(root))
    print(json.dumps(res), flush=True)

    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    pipe = newbie.load(root, device="cuda", dtype="bf16")
    torch.cuda.synchronize()
    res["load_s"] = time.perf_counter() - t0
    res["resident_gib_after_load"] = torch.cuda.memory_allocated() / 2**30

    prompt = long_xml_prompt()
    res["caption_tokens"] = pipe.text.count_tokens(prompt)
    # warm-up at a small size (kernel selection), then the measured 1024x1024 image
    pipe.generate(prompt, seed=0, steps=2, width=256, height=256)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    gen = pipe.generate(prompt, seed=42, steps=args.steps, width=1024, height=1024)
    torch.cuda.synchronize()
    res["image_s"] = time.perf_counter() - t0
    res["timings"] = gen.timings
    res["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    rec = gen.recipes[0]
    res["recipe"] = json.loads(rec.to_json())
    lat = gen.latents
    res["latent_finite"] = bool(torch.isfinite(lat).all())
    res["latent_std"] = float(lat.std())
    import numpy as np

    arr = torch.from_numpy(np.asarray(gen.images[0]).astype("float32"))
    res["image_mean"] = float(arr.mean())
    res["image_std"] = float(arr.std())
    res["warnings"] = rec.warnings
    gen.images[0].save(out_dir / "gpu-check-1024.png")

    # One DiT forward at the anchor's shapes (CFG batch 2, 1024x1024, 256 caption tokens), eager bf16.
    dit = pipe.dit
    x = torch.randn(2, 16, 128, 128, device="cuda", dtype=torch.bfloat16)
    t = torch.rand(2, device="cuda")
    cap = torch.randn(2, 256, 2560, device="cuda", dtype=torch.bfloat16)
    pooled = torch.randn(2, 1024, device="cuda", dtype=torch.bfloat16)
    mask = torch.ones(2, 256, dtype=torch.bool, device="cuda")
    mask[1, 40:] = False
    rope = dit.rope(mask.sum(1), 256, 64, 64)
    for name, m in (("masked", mask), ("unmasked", None)):
        with torch.no_grad():
            for _ in range(2):
                dit(x, t, cap, m, pooled, rope)
            torch.cuda.synchronize()
            ts = []
            for _ in range(5):
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                dit(x, t, cap, m, pooled, rope)
                e.record()
                torch.cuda.synchronize()
                ts.append(s.elapsed_time(e) / 1e3)
        res[f"dit_step_cfg2_{name}_s"] = sorted(ts)[2]
    print(json.dumps(res, indent=1))
    (out_dir / "gpu-check.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

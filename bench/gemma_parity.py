"""Our Gemma3 text decoder (newbie.model.gemma) against transformers' Gemma3TextModel on a GPU: full Gemma3-4B
widths, random weights, bf16, the hidden state NewBie reads (hidden_states[-2]) for right-padded batches and
for sequences long enough that the 1024 sliding window bites. Also the time of one encode each (ours runs 33
layers, transformers all 34) and of building each model empty.

    python bench/gemma_parity.py --out gemma-parity.json     # H100: about a minute
    python bench/gemma_parity.py --tiny --out /tmp/g.json     # CPU check of the script itself
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

CASES = {  # name: (lengths of the batch's prompts, padded length)
    "one prompt, no padding": ([300], 300),
    "cond + empty negative, right padding": ([296, 1], 296),
    "batch of 3, right padding": ([512, 200, 37], 512),
    "window bites (1100 tokens)": ([1100, 900], 1104),
}


def models(tiny: bool, device: torch.device):
    from transformers import Gemma3TextConfig, Gemma3TextModel

    from newbie.bench.random_checkpoint import gemma3_4b_text_config
    from newbie.loading.strict import build_empty
    from newbie.model.gemma import Gemma, GemmaConfig, init_weights

    cfg = gemma3_4b_text_config()
    if tiny:
        fields = {**cfg.to_dict(), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 7}
        fields.update(head_dim=16, num_attention_heads=4, num_key_value_heads=2, query_pre_attn_scalar=16)
        fields.update(sliding_window=64, vocab_size=1000, layer_types=None)
        cfg = GemmaConfig.from_dict(fields)
    dtype = torch.float32 if tiny else torch.bfloat16
    torch.manual_seed(0)
    with torch.device(device):
        ours = init_weights(Gemma(cfg)).to(dtype).eval().requires_grad_(False)
        with torch.no_grad():
            for name, p in ours.named_parameters():
                if "norm" in name:  # the norms scale by 1 + w: vary them like trained ones
                    p.normal_(0.0, 0.1)
    hf_cfg = Gemma3TextConfig(**{k: v for k, v in cfg.to_dict().items() if k != "model_type"})
    hf_cfg._attn_implementation = "sdpa"
    t0 = time.perf_counter()
    theirs = build_empty(lambda: Gemma3TextModel(hf_cfg), device)  # as newbie loaded it before (fp32 RoPE)
    build_theirs = time.perf_counter() - t0
    theirs.load_state_dict(ours.state_dict(), assign=True)
    theirs.to(device)
    theirs.eval().requires_grad_(False)
    t0 = time.perf_counter()
    with torch.device("meta"):
        Gemma(cfg)
    build_ours = time.perf_counter() - t0
    return ours, theirs, {"build_empty_ours_s": build_ours, "build_empty_transformers_s": build_theirs}


def timed(fn, device, **kw) -> tuple[torch.Tensor, float]:
    fn(**kw)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn(**kw)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def transformers_hidden(model, **kw) -> torch.Tensor:
    return model(**kw, output_hidden_states=True).hidden_states[-2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    from newbie.model.gemma import hidden_state_layers

    device = torch.device("cpu" if args.tiny else "cuda")
    ours, theirs, res = models(args.tiny, device)
    res["device"] = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    n = hidden_state_layers(-2, len(ours.layers))
    g = torch.Generator().manual_seed(1)
    res["cases"] = {}
    for name, (lengths, T) in CASES.items():
        ids = torch.randint(3, ours.config.vocab_size, (len(lengths), T), generator=g)
        mask = torch.zeros(len(lengths), T, dtype=torch.long)
        for i, k in enumerate(lengths):
            ids[i, :1], ids[i, k:], mask[i, :k] = 2, 0, 1
        ids, mask = ids.to(device), mask.to(device)
        with torch.no_grad():
            a, t_ours = timed(ours, device, input_ids=ids, attention_mask=mask, n_layers=n)
            b, t_theirs = timed(
                lambda **kw: transformers_hidden(theirs, **kw), device, input_ids=ids, attention_mask=mask
            )
        valid = mask.bool()
        diff = (a[valid].float() - b[valid].float()).abs().max().item()
        res["cases"][name] = {
            "valid_tokens_bit_identical": bool(torch.equal(a[valid], b[valid])),
            "all_tokens_bit_identical": bool(torch.equal(a, b)),
            "max_abs_diff_valid": diff,
            "max_abs_hidden": b[valid].float().abs().max().item(),
            "encode_ours_s": round(t_ours, 4),
            "encode_transformers_s": round(t_theirs, 4),
        }
        print(name, json.dumps(res["cases"][name]), flush=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

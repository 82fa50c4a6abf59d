"""Speed of `newbie prompt expand --llm`: new tokens per second of the grammar-constrained Gemma3 loop.

A full-size Gemma3-4B text model (spec section 3.1 config, the one bench/gpu_check.py builds) with RANDOM
weights in bf16 on CUDA, a word-level tokenizer of the same vocabulary size, and the real expansion loop
(system prompt + few-shot, token grammar, static KV cache, CUDA graph per step). Random weights measure speed
only: the text is nonsense, but it is still valid XML, which is checked. Also one run without the CUDA graph
(decoder "eager": each token's kernels launched from Python, as with streamed layers), for comparison.
`--decoders auto,compiled` runs the loop with each decoder kind (compiled: the step torch.compile'd, then
graphed); `--section` first runs the speed bench's Gemma section on the same model (newbie.bench.llm_tokens:
every kind's raw decode speed, the bandwidth bound, the kernel profiles), without loading a whole pipeline.
Needs torch only (our own Gemma, newbie.model.gemma).

    python bench/llm_speed.py --out llm-speed.json            # H200: < 90 s
    python bench/llm_speed.py --section --decoders auto,compiled --out "$OUT/llm-decode.json"  # + the compile
    python bench/llm_speed.py --tiny --out /tmp/llm-tiny.json  # CPU check of the script itself
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

TEXT = "two girls under cherry blossoms, one with silver hair holding an umbrella"


def tiny_text_config():
    """The 4B structure (5 sliding : 1 global, two RoPE bases, linear x8 on global) at toy width."""
    from newbie.loading.comfy import gemma3_4b_fields
    from newbie.model.gemma import GemmaConfig

    return GemmaConfig.from_dict(
        gemma3_4b_fields(
            vocab_size=4096,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=6,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
        )
    )


def tokenizer_for(vocab_size: int):
    """A word-level tokenizer with exactly vocab_size ids: the toy words, the XML tag names, fillers."""
    from newbie.demo.tiny import word_tokenizer
    from newbie.demo.vocab import toy_words
    from newbie.prompts import CHARACTER_FIELDS, GENERAL_FIELDS

    words = list(
        dict.fromkeys(
            toy_words()
            + list(CHARACTER_FIELDS + GENERAL_FIELDS)
            + [
                "character_1",
                "character_2",
                "character_3",
                "character_4",
                "general_tags",
                "caption",
                "start_of_turn",
                "end_of_turn",
                "user",
                "model",
            ]
        )
    )
    fillers = vocab_size - 12 - len(words)  # word_tokenizer adds 4 special and 8 punctuation tokens
    return word_tokenizer(words + [f"w{i}" for i in range(fillers)], "gemma")


def build(tiny: bool, device: torch.device):
    from newbie.model.gemma import Gemma, init_weights

    if tiny:
        cfg, dtype = tiny_text_config(), torch.float32
    else:
        from gpu_check import gemma3_4b_text_config

        cfg, dtype = gemma3_4b_text_config(), torch.bfloat16
    torch.manual_seed(0)
    with torch.device(device):
        model = init_weights(Gemma(cfg)).to(dtype).eval().requires_grad_(False)
        for name, p in model.named_parameters():
            if "norm" in name:  # RMSNorm weights start at 0 (scale 1+w): vary them like trained ones
                p.normal_(0.0, 0.1)
    return model, tokenizer_for(cfg.vocab_size)


def run(model, tok, device, decoder: str, max_new_tokens: int) -> dict:
    from newbie.prompts import parse
    from newbie.prompts.llm import expand_llm

    t0 = time.perf_counter()
    out = expand_llm(TEXT, model, tok, max_new_tokens=max_new_tokens, device=device, decoder=decoder)
    wall = time.perf_counter() - t0
    parse(out.raw), parse(out.xml)  # valid XML whatever the weights
    s = out.stats
    return {
        "decoder": s.decoder,
        "cuda_graph": s.graph,
        "compiled": s.compiled,
        "graph_error": s.graph_error,
        "prompt_tokens": s.prompt_tokens,
        "new_tokens": s.new_tokens,
        "chosen_tokens": s.chosen_tokens,
        "setup_s": round(s.setup_s, 4),
        "prefill_s": round(s.prefill_s, 4),
        "decode_s": round(s.decode_s, 4),
        "tokens_per_s": round(s.tokens_per_s, 1),
        "wall_s": round(wall, 3),
        "truncated": s.truncated,
        "xml_chars": len(out.xml),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON result file")
    ap.add_argument("--tiny", action="store_true", help="a toy-width Gemma3 on the CPU (checks the script)")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--eager-tokens", type=int, default=64, help="budget of the run without the CUDA graph")
    ap.add_argument("--decoders", default="auto", help="comma list of decoder kinds: auto, compiled")
    ap.add_argument("--section", action="store_true", help="also the speed bench's Gemma section, first")
    args = ap.parse_args()

    device = torch.device("cpu" if args.tiny else "cuda")
    t0 = time.perf_counter()
    model, tok = build(args.tiny, device)
    res = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "date": date.today().isoformat(),
        "torch": torch.__version__,
        "model": "tiny Gemma3 (random)" if args.tiny else "Gemma3-4B text, random weights, bf16",
        "params": sum(p.numel() for p in model.parameters()),
        "vocab": model.config.vocab_size,
        "build_s": round(time.perf_counter() - t0, 2),
        "max_new_tokens": args.max_new_tokens,
    }
    print(json.dumps(res), flush=True)
    from newbie.prompts.llm import vocab_of

    t0 = time.perf_counter()
    vocab_of(tok, model.config.vocab_size)  # once per tokenizer (cached): reading every token's text
    res["vocab_table_s"] = round(time.perf_counter() - t0, 2)
    if args.section:
        section(res, model, device, args)
    with torch.no_grad():
        res["by_decoder"] = {}
        for kind in args.decoders.split(","):
            # the warm-up run builds the first decoder at the runs' cache length: for "compiled" that is the
            # compile (its setup_s), which the runs then reuse
            by = res["by_decoder"][kind] = {"warmup": run(model, tok, device, kind, args.max_new_tokens)}
            by["runs"] = [run(model, tok, device, kind, args.max_new_tokens) for _ in range(args.repeats)]
            by["tokens_per_s"] = statistics.median(r["tokens_per_s"] for r in by["runs"])
            Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
        first = res["by_decoder"][args.decoders.split(",")[0]]
        res["warmup"], res["runs"], res["tokens_per_s"] = (
            first["warmup"],
            first["runs"],
            first["tokens_per_s"],
        )
        res["eager"] = run(model, tok, device, "eager", args.eager_tokens)
    if device.type == "cuda":
        res["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    res["meets_60_tok_s"] = res["tokens_per_s"] >= 60
    print(json.dumps(res, indent=1), flush=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


def section(res: dict, model, device: torch.device, args) -> None:
    """newbie bench speed's Gemma section on this model (tiny: the aot_eager backend, no CPU code generation)."""
    from newbie.bench.llm_tokens import llm_section

    out: dict = {}
    try:
        llm_section(
            out,
            model,
            device,
            new_tokens=args.max_new_tokens,
            backend="aot_eager" if args.tiny else "inductor",
        )
    except Exception as e:  # noqa: BLE001 - the expansion runs still tell their figures
        out["error"] = f"{type(e).__name__}: {e}"[:400]
    res["decode_section"] = out
    print(json.dumps({k: out.get(k) for k in ("llm_tokens_per_s", "llm_decoder", "error")}), flush=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()

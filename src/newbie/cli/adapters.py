"""`newbie adapter inspect PATH`: what an adapter holds and whether it fits a model (no weights loaded)."""

from __future__ import annotations

import sys


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("adapter", help="inspect LoRA/LoKr adapter files")
    sub = p.add_subparsers(dest="adapter_command", required=True)
    i = sub.add_parser(
        "inspect", help="kind, rank, scale and target layers of an adapter; checks it fits the model"
    )
    i.add_argument("path", help="PEFT folder or .safetensors file")
    i.add_argument(
        "--model",
        help="model folder or transformer file to check against (default: NewBie Exp0.1 "
        "shapes; the demo model with --model demo)",
    )
    i.set_defaults(func=run)


def run(args) -> int:
    from collections import Counter

    from newbie.adapters.adapter import load_adapter
    from newbie.adapters.deltas import LoraDelta

    shapes, against = _target_shapes(args.model)
    adapter = load_adapter(args.path, shapes)
    print(f"{adapter.path}")
    print(f"  sha256   {adapter.sha256}")
    print(f"  kind     {adapter.kind}, {len(adapter.deltas)} layers, fits {against}")
    ranks = Counter(d.rank for d in adapter.deltas.values())
    scales = Counter(round(d.scale, 6) for d in adapter.deltas.values())
    rank_text = ", ".join(f"{r or 'full'} x{n}" for r, n in sorted(ranks.items(), key=str))
    print(f"  rank     {rank_text}")
    print(f"  scale    {', '.join(f'{s:g} x{n}' for s, n in sorted(scales.items()))}")
    suffixes = Counter(_role(name) for name in adapter.deltas)
    print(f"  targets  {', '.join(f'{s} x{n}' for s, n in sorted(suffixes.items()))}")
    lora = sum(isinstance(d, LoraDelta) for d in adapter.deltas.values())
    if lora and lora != len(adapter.deltas):
        print(f"  ({lora} LoRA layers, {len(adapter.deltas) - lora} LoKr layers)")
    for note in adapter.notes:
        print(f"warning: {note}", file=sys.stderr)
    return 0


def _role(name: str) -> str:
    """layers.3.attention.qkv -> attention.qkv (what a layer is, not which block it sits in)"""
    parts = name.split(".")
    return (
        ".".join(
            p for p in parts if not p.isdigit() and p not in ("layers", "noise_refiner", "context_refiner")
        )
        or name
    )


def _target_shapes(model: str | None) -> tuple[dict[str, tuple[int, int]], str]:
    """Linear shapes from the checkpoint header and config (no weights read), or from the spec's sizes."""
    from pathlib import Path

    from newbie.config import SPECS
    from newbie.loading.dit import config_from_json, dit_source, expected_shapes, infer_layer_counts
    from newbie.loading.safetensors_io import read_headers

    cfg = SPECS["newbie-exp0.1"].dit
    against = "NewBie Exp0.1"
    if model:
        from newbie.demo.model import resolve_model

        model = resolve_model(model)[0]
        folder = Path(model)
        files, cfg_path = dit_source(folder)
        cfg = config_from_json(cfg_path, cfg) if cfg_path else infer_layer_counts(read_headers(files), cfg)
        against = str(folder)
    shapes = {
        k[: -len(".weight")]: v
        for k, v in expected_shapes(cfg).items()
        if k.endswith(".weight") and len(v) == 2
    }
    return shapes, against

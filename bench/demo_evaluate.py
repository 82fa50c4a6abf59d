"""Measured binding accuracy of the demo model on held-out prompts (newbie.demo.evaluate), as a command:

python bench/demo_evaluate.py [--model DIR] [--seeds 20] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import newbie  # noqa: E402 - after the path to the package
from newbie.demo.evaluate import evaluate, held_out_scenes  # noqa: E402
from newbie.demo.world import held_out_triples  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--device")
    ap.add_argument("--per-triple", type=int, default=1)
    args = ap.parse_args()
    pipe = newbie.load(args.model, device=args.device)
    result = evaluate(pipe, held_out_scenes(args.per_triple), args.seeds)
    result["held_out_triples"] = sorted(held_out_triples())
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

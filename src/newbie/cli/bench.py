"""`newbie bench ...`: the measuring commands. Each subcommand lives in its own module with
add_parser(bench_subparsers); a module missing from this build is skipped."""

from __future__ import annotations

import argparse

from newbie.cli.registry import register

BENCH_MODULES = ("newbie.cli.bench_precision", "newbie.bench.speed", "newbie.bench.startup")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("bench", help="measure precision, speed and memory on this machine")
    sub = p.add_subparsers(dest="bench_command", required=True)
    register(sub, BENCH_MODULES)
    return p

"""--parallel parsing, shard arithmetic and the one-line refusals (no processes started)."""

import pytest
import torch

from newbie.errors import NewbieError
from newbie.parallel.launch import Placement
from newbie.parallel.mesh import Layout, parse_layout
from newbie.parallel.preflight import model_heads, preflight
from newbie.parallel.sequence import check_heads, shard_sizes


def test_parse_layout():
    assert parse_layout("sp:2") == Layout(cfg=1, sp=2)
    assert parse_layout("cfg:2") == Layout(cfg=2, sp=1)
    assert parse_layout("cfg:2, sp:4") == Layout(cfg=2, sp=4) and Layout(2, 4).world == 8
    for bad, words in [
        ("sp2", "not cfg:N or sp:N"),
        ("tp:2", "not cfg:N or sp:N"),
        ("sp:x", "whole number"),
        ("sp:0", ">= 1"),
        ("cfg:4", "cfg is 1 or 2"),
        ("sp:2,sp:2", "twice"),
    ]:
        with pytest.raises(NewbieError, match=words):
            parse_layout(bad)


def test_shards_cover_any_length_exactly():
    for n in (1, 5, 16, 17, 333):
        for world in (1, 2, 3, 4, 8):
            sizes = shard_sizes(n, world)
            assert sum(sizes) == n and max(sizes) - min(sizes) <= 1 and len(sizes) == world


def test_sp_must_divide_the_kv_heads():
    for sp in (1, 2, 4, 8):
        check_heads(24, 8, sp)  # the real model: 24 query / 8 key-value heads
    for sp in (3, 6, 16):
        with pytest.raises(NewbieError, match=f"degree {sp} must divide the model's 8 key-value heads"):
            check_heads(24, 8, sp)


def test_demo_model_heads_decide_what_is_refused():
    heads, kv = model_heads(None)  # the embedded demo model: 6 query / 3 key-value heads
    assert (heads, kv) == (6, 3)
    with pytest.raises(NewbieError, match="use sp in 1, 3"):
        preflight("sp:2", None, "cpu")
    layout, placement = preflight("cfg:2,sp:3", None, "cpu")
    assert layout.world == 6 and placement.devices == ("cpu",) * 6 and not placement.cuda


def test_refusals_before_anything_starts(monkeypatch, tiny_model_dir):
    with pytest.raises(NewbieError, match="--vram"):
        preflight("sp:2", str(tiny_model_dir), "cpu", vram="8GB")
    preflight("sp:2", str(tiny_model_dir), "cpu", compile=True)  # --compile runs inside each rank now
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert Placement.for_world(2, None).devices == ("cuda:0", "cuda:1")
    assert Placement.for_world(2, "cuda:1,cuda:0").devices == ("cuda:1", "cuda:0")
    with pytest.raises(NewbieError, match="4 processes need 4 GPUs; cuda:2 is not one of this machine's 2"):
        Placement.for_world(4, "cuda")
    with pytest.raises(NewbieError, match="2 processes need 2 devices, --device lists 1"):
        Placement.for_world(2, "cuda:0")
    with pytest.raises(NewbieError, match="twice"):
        Placement.for_world(2, "cuda:0,cuda:0")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(NewbieError, match="no CUDA GPU"):
        Placement.for_world(2, "cuda")


def test_serve_refuses_bad_parallel_combinations(tiny_model_dir, tmp_path):
    import argparse

    from newbie.cli.model_args import load_kwargs
    from newbie.cli.serve import add_parser, run
    from newbie.serve.limits import ApiLimits
    from newbie.serve.parallel import parallel_service

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())

    def args(*extra):
        return parser.parse_args(
            ["serve", "--model", str(tiny_model_dir), "--data-dir", str(tmp_path), *extra]
        )

    with pytest.raises(NewbieError, match="cannot be combined with --ray"):
        run(args("--ray", "--parallel", "sp:2"))
    with pytest.raises(NewbieError, match="takes 2 devices per group; --device lists 3"):
        parallel_service(
            a := args("--device", "cuda:0,cuda:1,cuda:2", "--parallel", "sp:2"), ApiLimits(), load_kwargs(a)
        )
    with pytest.raises(NewbieError, match="degree 4 must divide the model's 2 key-value heads"):
        parallel_service(a := args("--device", "cpu", "--parallel", "sp:4"), ApiLimits(), load_kwargs(a))

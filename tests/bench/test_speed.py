"""CPU checks of `newbie bench speed`'s arithmetic and bookkeeping (the timings themselves need a GPU)."""

import json

import pytest
import torch

from newbie.bench import speed
from newbie.demo.tiny import tiny_dit_config
from newbie.model.dit import NextDiT


def test_exact_flops_count_adaln_once_per_sample():
    dit = NextDiT(tiny_dit_config())
    block = dit.layers[0]
    ada = sum(p.numel() for p in block.adaLN_modulation.parameters())
    caps, img = [7, 3], 16
    cfg = dit.cfg
    tokens = sum(cfg.n_layers * (c + img) + cfg.n_refiner_layers * (img + c) for c in caps)
    calls = len(caps) * (cfg.n_layers + cfg.n_refiner_layers)
    # the issue-6 count charges the adaLN projection per token; the exact count once per call
    diff = speed.step_flops(dit, caps, img) - speed.step_flops_exact(dit, caps, img)
    assert diff == pytest.approx(2 * ada * (tokens - calls))


def test_trajectory_is_euler_with_cfg():
    x = torch.randn(1, 2, 3, 3)
    c, u = torch.randn(1, 2, 3, 3), torch.randn(1, 2, 3, 3)
    # constant fields: Euler is exact, x(0) = x(1) - guided velocity
    out = speed._trajectory(lambda z, s: torch.cat([c, u]), x, steps=4, cfg=3.0)
    torch.testing.assert_close(out, x - (u + 3.0 * (c - u)))


def test_targets_report_met_missed_and_absent():
    res = {
        "newbie_s_per_step": 0.099,
        "compile_cold_s": 25.0,
        "sizes": {"2048": {"pct_of_ceiling": 0.81}},
        "newbie_fp8_s_per_step": "not run: --no-fp8",
    }
    t = speed._targets(res)
    assert t["bf16 step <= 0.100 s"]["met"] is True
    assert t["compile cold <= 20 s"]["met"] is False
    assert t["2048² step >= 80% of ceiling"]["met"] is True
    assert t["fp8 step <= 0.075 s"] == {"value": "not run: --no-fp8", "met": None}
    assert t["compile warm <= 5 s"]["met"] is None
    t = speed._targets({"llm_tokens_per_s": 250.0, "cache_comparison": {"newbie_matches_dbcache": False}})
    assert t["Gemma expansion >= 200 tokens/s"] == {"value": 250.0, "met": True}
    assert t["step cache >= DBCache's PSNR at <= its calls"]["met"] is False


def test_matched_takes_our_best_psnr_within_dbcache_calls():
    from newbie.bench.speed_cache import matched

    rows = {
        "none": {"calls": 56.0, "psnr_db": None},
        "first_block_0.1": {"calls": 20.0, "psnr_db": 44.0},
        "first_block_0.05": {"calls": 30.0, "psnr_db": 53.0},
        "auto": {"calls": 22.0, "psnr_db": 48.0},
    }
    m = matched(rows, {"a": {"calls": 22.5, "psnr_db": 47.5}, "b": {"calls": 10.0, "psnr_db": 40.0}})
    assert m["a"]["newbie"] == "auto" and m["a"]["newbie_at_least_dbcache"] is True  # 0.05 spends more
    assert m["b"]["newbie"] is None  # nothing of ours is that cheap


def test_sections_skip_on_budget_record_errors_and_save(tmp_path):
    res = {}
    run = speed._Run(res, [tmp_path / "a.json", tmp_path / "out" / "a.json"], budget_s=100)
    assert run.section("ok", 1, lambda: res.update(x=1))
    assert not run.section("boom", 1, lambda: 1 / 0)
    assert not run.section("late", 1000, lambda: res.update(y=2))
    saved = json.loads((tmp_path / "out" / "a.json").read_text())
    assert saved["x"] == 1 and "y" not in saved
    assert saved["errors"]["boom"].startswith("ZeroDivisionError")
    assert saved["skipped"]["late"].startswith("not run:")


def test_a_hung_section_is_stopped_and_the_run_goes_on(tmp_path):
    import time

    res = {}
    run = speed._Run(res, [tmp_path / "a.json"], budget_s=100)
    t = time.perf_counter()
    assert not run.section("hang", 0, lambda: time.sleep(30), limit_s=0.3)
    assert time.perf_counter() - t < 5
    assert "TimeoutError" in res["errors"]["hang"]
    assert run.section("next", 0, lambda: res.update(z=1))


def test_a_section_that_swallows_the_first_stop_is_stopped_again(tmp_path, monkeypatch):
    import time

    from newbie.bench import time_limit

    monkeypatch.setattr(time_limit.signal, "setitimer", _fast_interval(time_limit.signal.setitimer))
    swallowed = []

    def stubborn():
        try:
            time.sleep(30)
        except TimeoutError as e:  # as inductor's compile workers do: log and carry on
            swallowed.append(e)
        time.sleep(30)

    res = {}
    run = speed._Run(res, [tmp_path / "a.json"], budget_s=100)
    t = time.perf_counter()
    assert not run.section("stubborn", 0, stubborn, limit_s=0.3)
    assert time.perf_counter() - t < 5 and len(swallowed) == 1
    assert "TimeoutError" in res["errors"]["stubborn"]


def _fast_interval(setitimer):
    # the repeat interval of the section alarm, shortened so the test takes a second, not 5
    def patched(which, seconds, interval=0.0):
        return setitimer(which, seconds, min(interval, 0.3) if interval else interval)

    return patched


def test_peer_and_cache_sections_run_on_a_tiny_model(tiny_pipeline, tmp_path):
    # the sections the 2026-12-01 GPU run did not reach, end to end on CPU: diffusers' Lumina2 at our shapes,
    # our step cache on one trajectory, and cache-dit's DBCache where it is installed (a reason where not)
    pytest.importorskip("diffusers")
    from newbie.bench.compile_child import make_inputs, make_step

    dit = tiny_pipeline.dit
    x, cond, unc, grid = make_inputs(dit, size=32, cap_tokens=6, uncond_tokens=3)
    assert make_step(dit, x, cond, unc, grid)().shape == (2, 16, 4, 4)
    S = {"pipe": tiny_pipeline, "dit": dit, "x": x, "cond": cond, "unc": unc, "grid": grid}
    res = {"peers": {}}
    run = speed._Run(res, [tmp_path / "r.json"], budget_s=1e9)
    assert run.section("peers", 0, lambda: speed._diffusers_peers(S, res, run))
    assert res["peers"]["diffusers_eager"] > 0
    assert run.section("step_cache", 0, lambda: speed._cache_comparison(S, res, run, steps=4))
    from newbie.bench.step_cache_eval import POLICIES

    rows = res["step_cache_policies"]
    assert set(POLICIES) <= set(rows)  # every policy of the table on the trajectory
    assert rows["none"]["calls"] == rows["none"]["full_calls"] == 8 and rows["none"]["psnr_db"] is None
    for name in POLICIES:
        row = rows[name]
        assert row["of_calls"] == 8 and row["full_calls"] <= row["calls"] <= 8
        assert name == "none" or row["psnr_db"] > 0
        assert row["binding"] == "not measured" and row["setting"]
    assert rows["first_block_0.05"]["setting"] == "--step-cache 0.05"
    dbcache = res["peers"]["cache_dit_dbcache"]
    import importlib.util

    assert isinstance(dbcache, float) or dbcache.startswith("not run: cache-dit not installed")
    assert isinstance(dbcache, float) == (importlib.util.find_spec("cache_dit") is not None)
    if isinstance(dbcache, float):  # cache-dit there: its rows beside ours, on our weights, and the match
        from newbie.bench.speed_cache import DBCACHE

        out = res["cache_comparison"]
        assert all(rows[n]["of_calls"] == 8 and rows[n]["psnr_db"] > 0 for n in DBCACHE)
        assert out["diffusers_uncached_psnr_vs_newbie_db"] > 40  # the same model and start on both sides
        assert set(out["matched"]) == set(DBCACHE)


def test_step_and_first_call_timeline(tiny_pipeline):
    # the compile child's timeline wrapper records every block call of one CFG step, leaves its result
    # alone and puts the blocks back
    from newbie.bench.compile_child import _summarise, first_calls, make_inputs, make_step

    dit = tiny_pipeline.dit
    x, cond, unc, grid = make_inputs(dit, size=32, cap_tokens=6, uncond_tokens=3)
    with torch.no_grad():
        split = make_step(dit, x, cond, unc, grid)()
        blocks = list(dit.blocks())
        rows, undo = first_calls(dit)
        timed = make_step(dit, x, cond, unc, grid)()
        undo()
    assert list(dit.blocks()) == blocks
    torch.testing.assert_close(timed, split, rtol=0, atol=0)
    assert len(rows) == 2 * len(blocks)  # two branch forwards: each block called twice
    summary = _summarise(rows)
    assert {s[0].split()[0] for s in summary} == {"layers", "noise_refiner", "context_refiner"}
    assert sum(s[1] for s in summary) == len(rows)


def test_binding_rows_join_the_policy_table():
    # the demo model's binding per policy, merged into step_cache_policies beside the trajectory's rows
    from newbie.bench.speed_cache import binding

    res = {"step_cache_policies": {"first_block_0.15": {"calls": 20.0, "binding": "not measured"}}}
    binding(res, policies={"none": 0.0, "first_block_0.15": 0.15}, scenes=1)
    rows = res["step_cache_policies"]
    assert rows["first_block_0.15"]["calls"] == 20.0  # the trajectory's numbers stay
    demo = rows["first_block_0.15"]["binding"]
    assert demo["of_calls"] == rows["none"]["binding"]["of_calls"] == 40  # 20 Euler steps, two branches
    assert demo["full_calls"] < 40 and 0 <= demo["hair"] <= 1 and demo["psnr_db"] > 20
    assert rows["none"]["binding"]["psnr_db"] is None and res["step_cache_demo"]["images"] == 1


def test_cache_dit_fp8_names_torchao_when_it_is_missing(tmp_path, monkeypatch):
    # cache-dit quantizes to fp8 only through torchao: with cache-dit there and torchao not, the peer says so
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "torchao" else (object() if name == "cache_dit" else real(name, *a)),
    )
    res = {"peers": {}}
    speed._late_peers({}, res, speed._Run(res, [tmp_path / "r.json"], budget_s=1e9))
    assert "torchao" in res["peers"]["cache_dit_fp8_compiled"]
    assert res["peers"]["cache_dit_fp8_compiled"].startswith("not run:")
    assert res["peers"]["cache_dit_dbcache"].startswith("not run")  # every peer names why


def test_the_bench_prompt_is_a_valid_request():
    """The images' prompt passes the request check every door applies (2026-12-07: the official-recipe image
    and the fp8 image failed on the GPU with 'stray text outside any tag')."""
    from newbie.bench.speed import BENCH_PROMPT
    from newbie.prompts.parse import check_xml, parse

    check_xml(BENCH_PROMPT)
    assert len(parse(BENCH_PROMPT).general.other) == 200

"""bench/parallel.py's single-device checks on the CPU: the pre-SP baseline loader (from git or a saved file,
for the GPU machine whose copy of the tree has no .git), the paired A/B statistics of --overhead, and both
checks end to end with tiny configs writing their JSON to an --out file."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PARALLEL = ROOT / "bench" / "parallel.py"


def _parallel():
    if "bench_parallel" not in sys.modules:  # a script, not a package: import it by path
        spec = importlib.util.spec_from_file_location("bench_parallel", PARALLEL)
        sys.modules["bench_parallel"] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules["bench_parallel"]


def _has_baseline_rev() -> bool:
    rev = _parallel().BASELINE_REV
    done = subprocess.run(
        ["git", "cat-file", "-e", f"{rev}:src/newbie/model/dit.py"], cwd=ROOT, capture_output=True
    )
    return done.returncode == 0


needs_history = pytest.mark.skipif(not _has_baseline_rev(), reason="no git history with the pre-SP dit.py")


@pytest.fixture
def saved_baseline(tmp_path, monkeypatch, capsys):
    """What `make gpu-baseline` writes (bench/parallel.py --write-baseline), here into tmp."""
    path = tmp_path / "gpu" / "dit_before_sp.py"
    _main(monkeypatch, "--write-baseline", str(path))
    assert capsys.readouterr().out.strip() == str(path)
    assert path.read_text() == _parallel().baseline_source(_parallel().BASELINE_REV)
    return path


@needs_history
def test_saved_baseline_imports_against_todays_package(saved_baseline):
    module = _parallel().load_baseline(saved_baseline)
    assert module.__name__ == "dit_before_sp"
    assert not hasattr(module.NextDiT(_tiny_cfg()), "sequence_parallel")  # really the code before SP


def _tiny_cfg():
    from newbie.demo.tiny import tiny_dit_config

    return tiny_dit_config(clip_text_dim=48)


@pytest.mark.parametrize(
    "text, says",
    [
        (None, "no such file"),
        ("x = 1\n", "no NextDiT"),
        ("from newbie.model.math import moved_away\nclass NextDiT: ...\n", "moved_away"),
    ],
)
def test_bad_baseline_files_are_one_line_errors(tmp_path, text, says):
    from newbie.errors import NewbieError

    path = tmp_path / "dit_before_sp.py"
    if text is not None:
        path.write_text(text)
    with pytest.raises(NewbieError, match=says) as err:
        _parallel().load_baseline(path)
    assert "\n" not in str(err.value)


def test_todays_dit_is_refused_as_baseline():
    from newbie.errors import NewbieError

    with pytest.raises(NewbieError, match="already has sequence parallelism"):
        _parallel().load_baseline(ROOT / "src" / "newbie" / "model" / "dit.py")


def test_without_a_repository_git_baseline_points_to_the_file(tmp_path, monkeypatch):
    from newbie.errors import NewbieError

    monkeypatch.setattr(_parallel(), "BENCH", tmp_path / "bench")  # a tree copied without .git
    (tmp_path / "bench").mkdir()
    with pytest.raises(NewbieError, match="--baseline-file"):
        _parallel().baseline_source("HEAD")


def test_paired_difference_verdicts():
    paired = _parallel().paired_difference
    wobble = [1.0 + 0.002 * ((i * 7) % 5 - 2) for i in range(40)]  # +-0.4 %, the same for both models
    same = paired([(w, w * 1.001) for w in wobble])
    assert same["verdict"] == "within" and same["median"] == pytest.approx(0.001)
    slower = paired([(w, w * 1.03) for w in wobble])
    assert slower["verdict"] == "over" and slower["ci95"][0] > 0.01
    noisy = [(1.0, 1.0 + 0.05 * (-1) ** i) for i in range(6)]  # mean 0, spread far wider than the target
    assert paired(noisy)["verdict"] == "undecided"
    drift = paired(
        [(1.0 + 0.01 * i, (1.0 + 0.01 * i) * 1.005) for i in range(20)]
    )  # clocks drift: pairs don't care
    assert drift["mean"] == pytest.approx(0.005) and drift["ci95"][1] - drift["ci95"][0] < 1e-9


def _main(monkeypatch, *argv):
    monkeypatch.setattr(sys, "argv", ["parallel.py", *argv])
    _parallel().main()


@needs_history
def test_overhead_end_to_end_from_a_saved_file(saved_baseline, tmp_path, monkeypatch, capsys):
    out = tmp_path / "res" / "parallel-overhead.json"
    _main(
        monkeypatch,
        "--overhead",
        "--cpu",
        "--sizes",
        "64",
        "--repeats",
        "4",
        "--baseline-file",
        str(saved_baseline),
        "--out",
        str(out),
    )
    res = json.loads(out.read_text())
    assert res["pairs"] == 4 and len(res["seconds_sp1"]) == len(res["seconds_before_sp"]) == 4
    assert res["all_weights_shared"] and res["identical_output"] and res["max_abs_diff"] == 0.0
    assert res["verdict"] in ("within", "over", "undecided") and res["baseline"].startswith("file ")
    summary, path = capsys.readouterr().out.strip().splitlines()
    assert summary.startswith("overhead cpu 64x64") and path == str(out)


def test_layout_end_to_end(tmp_path, monkeypatch, capsys):
    _main(monkeypatch, "--layout", "--cpu", "--sizes", "64", "--repeats", "2", "--out", str(tmp_path))
    (path,) = tmp_path.glob("parallel-layout-cpu-*.json")
    rows = json.loads(path.read_text())["rows"]
    assert [r["sp"] for r in rows] == [2, 4, 8]
    assert all(r["tokens_per_rank"] * r["sp"] == r["tokens"] for r in rows)
    assert capsys.readouterr().out.startswith("layout cpu")

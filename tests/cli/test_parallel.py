"""`newbie generate --parallel`: the PNG equals the one-process PNG within one level; bad combinations are
refused in one line, exit 2, before any process starts."""

import numpy as np
import pytest
from PIL import Image

from newbie.cli.main import main

ARGS = ["1girl, smile", "--seed", "4", "--steps", "2", "--size", "64x48", "--quiet"]


def test_generate_sp2_on_cpu_processes(tiny_model_dir, tmp_path):
    model = ["--model", str(tiny_model_dir), "--dtype", "fp32"]
    assert main(["generate", *ARGS, *model, "--out", str(tmp_path / "one.png")]) == 0
    assert (
        main(
            [
                "generate",
                *ARGS,
                *model,
                "--parallel",
                "sp:2",
                "--device",
                "cpu",
                "--out",
                str(tmp_path / "two.png"),
            ]
        )
        == 0
    )
    a, b = (np.asarray(Image.open(tmp_path / f"{n}.png"), dtype=int) for n in ("one", "two"))
    assert a.shape == b.shape == (48, 64, 3) and np.abs(a - b).max() <= 1


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--parallel", "sp:3"], "degree 3 must divide the model's 2 key-value heads"),
        (["--parallel", "sp:2,cfg:3"], "cfg is 1 or 2"),
        (["--parallel", "cfg:2,sp:2", "--device", "cuda"], "no CUDA GPU"),
        (["--parallel", "cfg:2", "--device", "cpu,cpu"], "give cpu, cuda, or a list of cuda:N"),
    ],
)
def test_bad_combinations_are_refused_in_one_line(tiny_model_dir, tmp_path, capsys, extra, message):
    code = main(["generate", *ARGS, "--model", str(tiny_model_dir), "--out", str(tmp_path / "x.png"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "x.png").exists()


def test_comfy_dir_reaches_the_preflight_and_every_process(tiny_model_dir, tmp_path, monkeypatch):
    # --parallel used to drop --comfy-dir: the heads were checked on the demo model and every process loaded
    # the demo model. The fake folder's transformer carries the tiny model's config (2 KV heads; the demo
    # model has 3, which sp:2 would not divide).
    import shutil

    from newbie.parallel import runner

    models = tmp_path / "models"
    (models / "diffusion_models").mkdir(parents=True)
    (models / "diffusion_models" / "NewBie-Image-Exp0.1-bf16.safetensors").write_bytes(b"")
    shutil.copy(
        tiny_model_dir / "transformer" / "config.json",
        models / "diffusion_models" / "NewBie-Image-Exp0.1-bf16.config.json",
    )
    seen = {}

    def fake_generate(layout, placement, load, *args, **kwargs):
        seen.update(load)
        raise SystemExit(0)

    monkeypatch.setattr(runner, "generate", fake_generate)
    with pytest.raises(SystemExit):
        main(["generate", *ARGS, "--comfy-dir", str(models), "--parallel", "sp:2", "--device", "cpu"])
    assert seen["comfy_dir"] == str(models) and seen["path"] is None


def test_generate_compile_with_sp3_equals_one_eager_process(tmp_path, monkeypatch):
    # the composition the old copy of the block refused: compiled blocks holding the sharded attention. The
    # ranks are forked, so they inherit this Pipeline.compile; its backend records each graph it is given
    # (inductor would give the same graphs, minutes slower on a CPU) and leaves them to run as traced
    import functools
    import os

    from newbie.pipeline.pipeline import Pipeline

    def backend(gm, example_inputs):
        collectives = sum("all_to_all" in str(n.target) for n in gm.graph.nodes)
        with open(tmp_path / f"graphs-{os.getpid()}.txt", "a") as f:
            f.write(f"{collectives}\n")
        return gm.forward

    monkeypatch.setattr(Pipeline, "compile", functools.partialmethod(Pipeline.compile, backend=backend))
    args = ["generate", "1girl, smile", "--seed", "4", "--steps", "2", "--size", "64x64", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "one.png")]) == 0
    sp = ["--compile", "--parallel", "sp:3", "--device", "cpu", "--out", str(tmp_path / "three.png")]
    assert main([*args, *sp]) == 0
    a, b = (np.asarray(Image.open(tmp_path / f"{n}.png"), dtype=int) for n in ("one", "three"))
    assert a.shape == b.shape == (64, 64, 3) and np.abs(a - b).max() <= 1
    logs = sorted(tmp_path.glob("graphs-*.txt"))
    assert len(logs) == 3  # every rank compiled its blocks
    for log in logs:  # every graph is a whole block, its attention's two all-to-alls inside it
        counts = [int(n) for n in log.read_text().split()]
        assert counts and all(n == 2 for n in counts), counts


def test_the_progress_factory_travels_to_the_ranks_and_draws_on_their_stderr(capsys):
    import pickle

    from newbie.cli.parallel import progress_bar

    factory = pickle.loads(pickle.dumps(progress_bar))  # the Job carries it to spawned ranks
    bar = factory(2)
    bar({"step": 1})
    bar({"step": 2})
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[-1].startswith("denoise   2/2")

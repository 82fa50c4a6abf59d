import json
import math
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

from newbie.bench import memory, metrics, study
from newbie.bench.contact_sheet import HEAT_COLOURS, contact_sheet, heat
from newbie.bench.report import json_safe, markdown, write_report
from newbie.cli.main import main

PROMPTS = ["1girl, red_hair", "<character_1> <n>$character_1$</n> <gender>1girl</gender> </character_1>"]
REQUIRED = {"dtype", "peak_gib", "s_per_image", "psnr", "ssim", "nan_count", "black_images"}


@pytest.fixture(scope="module")
def result(tiny_model_dir):
    real_load = study.load_dtype

    def load(name, cfg):
        if name == "fp8":
            raise study.Unavailable("no fp8 kernels in this test")
        return real_load(name, cfg)

    cfg = study.StudyConfig(
        dtypes=["bf16", "fp32", "fp16", "fp8"],
        prompts=PROMPTS,
        seeds=[0],
        model=str(tiny_model_dir),
        device="cpu",
        steps=2,
        sampler="euler",
        width=32,
        height=32,
        warmup_steps=1,
        note="random weights",
    )
    with mock.patch.object(study, "load_dtype", load):
        return study.run_study(cfg, log=lambda m: None)


def test_rows_follow_the_dtypes_with_fp32_first(result):
    assert [r["dtype"] for r in result.rows] == ["fp32", "bf16", "fp16", "fp8"]
    for r in result.rows:
        assert REQUIRED <= set(r)
    fp8 = result.rows[3]
    assert not fp8["available"] and "no fp8 kernels" in fp8["reason"]


def test_reference_row_and_costs(result):
    ref, bf16 = result.rows[0], result.rows[1]
    assert ref["reference"] and ref["psnr"] is None and ref["ssim"] is None
    assert bf16["compute"]["dit"] == "bf16" and ref["compute"]["dit"] == "fp32"
    measured = memory.method(torch.device("cpu")) != memory.NO_METHOD  # Linux: /proc/self/clear_refs
    for r in result.rows[:3]:
        assert r["s_per_image"] > r["s_per_step"] > 0 and r["images"] == len(PROMPTS)
        assert r["nan_count"] == 0 and r["black_images"] == 0  # the tiny model stays finite in every dtype
        assert (r["peak_gib"] is not None) == measured and (r["peak_gib"] or 0) >= 0
        # the fp16 guard never has to step in at 32x32 here, so every row ran in the dtype it asked for
        assert r["guard_intervened"] is False and r["guard_events"] == []
        assert r["compute_after"]["dit"] == r["dtype"]
    assert len(result.images) == 3 * len(PROMPTS)


def test_agreement_numbers_are_recomputable_from_the_pictures(result):
    for r in result.rows[1:3]:
        d = r["dtype"]
        pairs = [(result.pictures[(d, i, 0)], result.pictures[("fp32", i, 0)]) for i in range(len(PROMPTS))]
        mse = np.mean([np.mean((metrics.as_array(a) - metrics.as_array(b)) ** 2) for a, b in pairs])
        expected = math.inf if mse == 0 else 10 * math.log10(255**2 / mse)
        assert r["psnr"] == pytest.approx(expected)
        assert r["psnr_min"] == pytest.approx(min(metrics.psnr(a, b) for a, b in pairs))
        assert r["ssim"] == pytest.approx(np.mean([metrics.ssim(a, b) for a, b in pairs]))
        assert r["max_pixel_error"] == max(metrics.max_abs_error(a, b) for a, b in pairs)
    assert result.rows[1]["psnr"] < math.inf  # bf16 rounding does change the picture


def test_report_files(result, tmp_path):
    paths = write_report(result, tmp_path / "out", cell=64)
    names = {p.name for p in paths}
    assert {"report.md", "report.json", "contact-sheet.png"} <= names
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [r["dtype"] for r in data["rows"]] == ["fp32", "bf16", "fp16", "fp8"]
    assert all(REQUIRED <= set(r) for r in data["rows"])
    assert data["rows"][0]["psnr"] is None and data["meta"]["prompts"] == PROMPTS
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| bf16 | bf16 / bf16 |" in md and "- fp8: no fp8 kernels in this test" in md
    assert "**random weights**" in md and data["meta"]["memory_method"] in md
    sheet = Image.open(tmp_path / "out" / "contact-sheet.png")
    assert sheet.size == (70 + 5 * (64 + 4), 2 * 34 + 2 * (64 + 4))  # 3 images + 2 heat maps, 2 rows
    if "time-memory.png" in names:
        assert Image.open(tmp_path / "out" / "time-memory.png").format == "PNG"
    else:
        assert "matplotlib is not installed" in md


def test_a_failing_dtype_is_reported_not_raised(tiny_model_dir):
    real_load = study.load_dtype

    def load(name, cfg):
        pipe = real_load(name, cfg)
        if name == "fp16":
            pipe.generate = mock.Mock(side_effect=RuntimeError("no kernel for Half"))
        return pipe

    cfg = study.StudyConfig(
        dtypes=["fp32", "fp16"],
        prompts=["1girl"],
        seeds=[1],
        model=str(tiny_model_dir),
        device="cpu",
        steps=1,
        width=32,
        height=32,
        warmup_steps=1,
    )
    with mock.patch.object(study, "load_dtype", load):
        res = study.run_study(cfg, log=lambda m: None)
    assert res.rows[1]["reason"] == "generation failed: RuntimeError: no kernel for Half"
    assert set(res.pictures) == {("fp32", 0, 1)}
    assert "- fp16: generation failed" in markdown(res, chart_note="")


def test_quantized_dtypes_are_unavailable_without_a_quantize_option(monkeypatch):
    from newbie.pipeline import load as load_module

    def old_load(path=None, *, device=None, dtype="auto", text_dtype=None, vae_dtype="fp32"):
        raise AssertionError("must not be called")

    monkeypatch.setattr(load_module, "load", old_load)  # a build from before quantization
    with pytest.raises(study.Unavailable, match="no quantize option"):
        study.load_dtype("int8", study.StudyConfig())


def test_quantize_load_errors_become_reasons(monkeypatch):
    from newbie.errors import NewbieError
    from newbie.pipeline import load as load_module

    def load(path=None, *, device=None, dtype="auto", text_dtype=None, vae_dtype="fp32", quantize=None):
        raise NewbieError("fp8 weights need torchao kernels this device lacks")

    monkeypatch.setattr(load_module, "load", load)
    with pytest.raises(study.Unavailable, match="cannot load: fp8 weights need torchao"):
        study.load_dtype("fp8", study.StudyConfig())
    with pytest.raises(NewbieError):  # the reference never hides its errors
        study.load_dtype("fp32", study.StudyConfig())


def test_the_bench_command(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(
        [
            "bench",
            "precision",
            "--model",
            str(tiny_model_dir),
            "--device",
            "cpu",
            "--dtypes",
            "fp32,bf16",
            "--prompt",
            "1girl, smile",
            "--seeds",
            "4",
            "--steps",
            "1",
            "--size",
            "32x32",
            "--cell",
            "32",
            "--out",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "| bf16 |" in captured.err and str(out / "report.json") in captured.out
    data = json.loads((out / "report.json").read_text())
    assert [r["dtype"] for r in data["rows"]] == ["fp32", "bf16"] and data["meta"]["seeds"] == [4]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dtypes", "fp32,fp64"], "unknown dtype fp64"),
        (["--seeds", "1,a"], "comma-separated integers"),
        (["--cell", "4"], "--cell"),
    ],
)
def test_bench_bad_input_is_one_line(argv, message, capsys):
    code = main(["bench", "precision", *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_bench_subcommand_modules_that_are_missing_are_skipped(monkeypatch):
    from newbie.cli import bench as bench_cli
    from newbie.cli.main import build_parser

    monkeypatch.setattr(
        bench_cli, "BENCH_MODULES", ("newbie.cli.bench_precision", "newbie.bench.not_built_here")
    )
    args = build_parser().parse_args(["bench", "precision", "--dtypes", "fp32"])
    assert args.bench_command == "precision" and args.dtypes == "fp32"


def test_heat_map_scale_and_contact_sheet_layout(tmp_path):
    d = np.array([[0.0, 10.0], [20.0, 40.0]])
    h = np.asarray(heat(d, 40.0))
    assert (h[0, 0] == HEAT_COLOURS[0]).all() and (h[1, 1] == HEAT_COLOURS[-1]).all()
    assert (np.asarray(heat(d, 0.0)) == HEAT_COLOURS[0]).all()
    red = Image.new("RGB", (40, 20), (200, 0, 0))
    pics = {("fp32", 0, 0): red, ("bf16", 0, 0): Image.new("RGB", (40, 20), (190, 0, 0))}
    path = contact_sheet(pics, ["fp32", "bf16", "fp16"], 1, [0], tmp_path / "s.png", cell=80)
    sheet = Image.open(path)
    assert sheet.size == (70 + 3 * 84, 2 * 34 + 40 + 4)  # fp16 has no pictures: left out; aspect kept
    assert sheet.getpixel((70 + 2 * 84 + 10, 34 + 10)) == tuple(int(c) for c in HEAT_COLOURS[-1])


def test_json_safe_turns_inf_into_null():
    assert json_safe({"a": [math.inf, 1.5, math.nan], "b": {"c": -math.inf}}) == {
        "a": [None, 1.5, None],
        "b": {"c": None},
    }


def test_cpu_peak_memory_sees_an_allocation():
    dev = torch.device("cpu")
    if memory.method(dev) == memory.NO_METHOD:
        pytest.skip("no /proc/self/clear_refs here")
    with memory.PeakMemory(dev) as mem:
        block = np.ones(256 * 2**20 // 8)  # 256 MiB, touched
        del block
    assert mem.peak_gib is not None and mem.peak_gib >= 0.2

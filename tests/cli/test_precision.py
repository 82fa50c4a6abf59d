import csv

import pytest

from newbie.cli.main import main
from newbie.cli.precision import COLUMNS, parse_steps


def test_trace_command_prints_writes_csv_and_plot(tiny_model_dir, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out_csv, out_png = tmp_path / "t" / "trace.csv", tmp_path / "trace.png"
    code = main(
        [
            "trace",
            "1girl, red_hair",
            "--model",
            str(tiny_model_dir),
            "--device",
            "cpu",
            "--dtype",
            "fp32",
            "--steps",
            "2",
            "--size",
            "64x64",
            "--sampler",
            "euler",
            "--steps-to-trace",
            "2",
            "--match",
            r"^layers\.\d+(\.attention\.logits|\.feed_forward)?$",
            "--csv",
            str(out_csv),
            "--plot",
            str(out_png),
            "--image",
            str(tmp_path / "img.png"),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "layers.0.attention.logits" in printed and "step 2: largest finite |x|" in printed
    rows = list(csv.DictReader(out_csv.open()))
    assert rows and set(rows[0]) == set(COLUMNS)
    assert {r["step"] for r in rows} == {"2"}
    assert {r["module"] for r in rows} == {
        "layers.0",
        "layers.1",
        "layers.0.attention.logits",
        "layers.1.attention.logits",
        "layers.0.feed_forward",
        "layers.1.feed_forward",
    }
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "img.png").is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps-to-trace", "1,x"], "comma-separated"),
        (["--steps-to-trace", "9"], "outside 1..2"),
        (["--match", "("], "regular expression"),
        (["--plot", "chart.jpg"], ".png"),
        (["--compile"], "drop --compile"),
    ],
)
def test_trace_bad_input_is_one_line(tiny_model_dir, capsys, argv, message):
    code = main(
        [
            "trace",
            "1girl",
            "--model",
            str(tiny_model_dir),
            "--device",
            "cpu",
            "--steps",
            "2",
            "--size",
            "32x32",
            "--quiet",
            *argv,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_default_steps_are_first_middle_last():
    assert parse_steps(None, 20) == {1, 10, 20}
    assert parse_steps(None, 1) == {1}
    assert parse_steps("3, 5", 20) == {3, 5}

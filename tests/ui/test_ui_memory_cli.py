import os
import sys
import types

import pytest
import torch

from newbie.cli.main import build_parser, main
from newbie.cli.ui import streamlit_command
from newbie.errors import NewbieError
from newbie.ui import memory
from newbie.ui.settings import UISettings


def test_planner_missing_is_said_plainly(monkeypatch):
    monkeypatch.setitem(sys.modules, "newbie.memory.planner", None)  # import now fails as if absent
    assert memory.plan_view(8, 1024, 1024).text == memory.PLANNER_MISSING


def test_planner_plan_and_its_predicted_peak(monkeypatch):
    class Plan:
        name, predicted_peak_gib = "staged", 7.25

        def describe(self):
            return "plan 'staged': one stage at a time"

    calls = []
    fake = types.ModuleType("newbie.memory.planner")
    fake.plan = lambda vram, w, h: calls.append((vram, w, h)) or Plan()
    monkeypatch.setitem(sys.modules, "newbie.memory.planner", fake)
    view = memory.plan_view(8.0, 1024, 768)
    assert calls == [(8.0, 1024, 768)]
    assert (view.text, view.predicted_peak_gib) == ("staged, predicted peak 7.2 GiB", 7.25)
    assert view.detail == "plan 'staged': one stage at a time"

    def no_fit(*_):
        raise NewbieError("no plan fits 2 GiB at 1024x768")

    fake.plan = no_fit
    assert memory.plan_view(2.0, 1024, 768).text == "no plan fits: no plan fits 2 GiB at 1024x768"


def test_measure_on_cpu_reports_the_process_peak():
    with memory.measure(torch.device("cpu")) as used:
        torch.ones(1000, 1000).sum()
    assert used.seconds > 0 and used.peak_gib > 0.01 and used.peak_kind == "process RSS"


def _args(*argv):
    return build_parser().parse_args(["ui", *argv])


def test_ui_command_line_passes_settings_to_streamlit(tmp_path):
    args = _args("--port", "8777", "--data-dir", str(tmp_path / "g"), "--model", str(tmp_path))
    assert args.host == "127.0.0.1"
    cmd, env = streamlit_command(args)
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("newbie/ui/app.py")
    flags = dict(zip(cmd[5::2], cmd[6::2], strict=True))
    assert flags["--server.port"] == "8777" and flags["--server.address"] == "127.0.0.1"
    assert flags["--server.headless"] == "true" and flags["--browser.gatherUsageStats"] == "false"
    assert flags["--theme.base"] == "dark"
    assert env["NEWBIE_UI_DATA_DIR"] == str((tmp_path / "g").resolve()) and (tmp_path / "g").is_dir()
    assert env["NEWBIE_UI_MODEL"] == str(tmp_path.resolve())
    cores = len(os.sched_getaffinity(0))
    assert env["NEWBIE_UI_CPU_THREADS"] == str(max(1, cores - 1))  # one core left to the server


def test_settings_round_trip_through_the_environment(tmp_path, monkeypatch):
    settings = UISettings(model="/m", data_dir=tmp_path, device="cpu", cpu_threads=3)
    for key, value in settings.env().items():
        monkeypatch.setenv(key, value)
    assert UISettings.from_env() == settings
    monkeypatch.setenv("NEWBIE_UI_CPU_THREADS", "lots")
    assert UISettings.from_env().cpu_threads is None


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--port", "0"], "--port must be between 1 and 65535"),
        (["--model", "/nonexistent/model"], "no such file or folder"),
    ],
)
def test_ui_bad_arguments_are_one_line_errors(argv, message, capsys, tmp_path):
    assert main(["ui", "--data-dir", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_a_network_host_needs_an_access_key_or_insecure(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("NEWBIE_UI_ACCESS_KEY", raising=False)
    assert main(["ui", "--data-dir", str(tmp_path), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "--access-key" in err and err.count("\n") == 1
    _, env = streamlit_command(_args("--data-dir", str(tmp_path), "--host", "0.0.0.0", "--access-key", "k"))
    assert env["NEWBIE_UI_ACCESS_KEY"] == "k" and env["NEWBIE_UI_REMOTE"] == "1"
    _, env = streamlit_command(_args("--data-dir", str(tmp_path), "--host", "0.0.0.0", "--insecure"))
    assert "NEWBIE_UI_ACCESS_KEY" not in env and env["NEWBIE_UI_REMOTE"] == "1"
    _, env = streamlit_command(_args("--data-dir", str(tmp_path)))
    assert "NEWBIE_UI_REMOTE" not in env

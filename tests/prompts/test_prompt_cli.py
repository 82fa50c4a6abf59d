import argparse
import io
import json

import pytest

from newbie.cli import prompts as cli
from newbie.prompts import parse


def run(capsys, *argv):
    parser = argparse.ArgumentParser(prog="newbie")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["prompt", *argv])
    assert args.func is cli.run
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


BAD = "<character_1>\n<n>x</n>\n<gender>1girl\n"
WARN = "<character_1>\n<n>$character_1$</n>\n<clothing></clothing>\n</character_1>"


def test_check_clean_prompt(capsys, readme_prompt):
    assert run(capsys, "check", readme_prompt) == (0, "", "")


def test_check_prints_one_warning_per_line(capsys, tmp_path):
    path = tmp_path / "p.xml"
    path.write_text(WARN, encoding="utf-8")
    code, out, err = run(capsys, "check", f"@{path}")
    assert code == 1 and err == ""  # warnings exit 1 without --strict
    assert out == f"{path}:3:1: NB105 <clothing> is empty; leave it out [character_1]\n"
    assert run(capsys, "check", "--strict", WARN)[0] == 1  # still accepted
    assert run(capsys, "check", WARN)[0] == 1


def test_check_reads_a_plain_path(capsys, tmp_path, monkeypatch, readme_prompt):
    path = tmp_path / "p.xml"
    path.write_text(WARN, encoding="utf-8")
    assert run(capsys, "check", str(path)) == (
        1,
        f"{path}:3:1: NB105 <clothing> is empty; leave it out [character_1]\n",
        "",
    )
    path.write_text(BAD, encoding="utf-8")
    assert run(capsys, "check", str(path)) == (2, "", f"{path}:3:1: error: <gender> is never closed\n")
    path.write_text(readme_prompt, encoding="utf-8")
    assert run(capsys, "check", str(path)) == (0, "", "")
    monkeypatch.chdir(tmp_path)  # a relative path too
    assert run(capsys, "check", "p.xml") == (0, "", "")


def test_check_malformed_is_exit_2_with_one_line(capsys, tmp_path):
    code, out, err = run(capsys, "check", BAD)
    assert (code, out) == (2, "")
    assert err == "<prompt>:3:1: error: <gender> is never closed\n"
    path = tmp_path / "bad.xml"
    path.write_text(BAD, encoding="utf-8")
    assert run(capsys, "check", f"@{path}")[2] == f"{path}:3:1: error: <gender> is never closed\n"


def test_check_missing_file_is_exit_2(capsys, tmp_path):
    code, out, err = run(capsys, "check", f"@{tmp_path / 'nope.xml'}")
    assert code == 2 and err.startswith("error:") and err.count("\n") == 1


def test_check_reads_stdin(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(BAD))
    assert run(capsys, "check", "-")[2].startswith("<stdin>:3:1: error:")


def test_format_is_verbatim_unless_canonical(capsys):
    messy = "<character_1><gender>1girl</gender><n>$character_1$</n></character_1>"
    assert run(capsys, "format", messy) == (0, messy + "\n", "")
    code, out, _ = run(capsys, "format", messy, "--canonical")
    assert code == 0 and out.splitlines()[1] == "<n>$character_1$</n>"
    assert run(capsys, "format", BAD)[0] == 2


def test_build_from_tags_json_yaml(capsys, tmp_path):
    code, out, _ = run(capsys, "build", "--from-tags", "1girl, blue_hair, school_uniform, smile, night_sky")
    assert code == 0 and parse(out).characters[0].clothing == ["school_uniform"]
    data = {"characters": [{"gender": "1girl", "appearance": "red_hair"}]}
    (tmp_path / "p.json").write_text(json.dumps(data), encoding="utf-8")
    (tmp_path / "p.yaml").write_text(
        "characters:\n  - gender: 1girl\n    appearance: red_hair\n", encoding="utf-8"
    )
    from_json = run(capsys, "build", "--from-json", str(tmp_path / "p.json"))
    from_yaml = run(capsys, "build", "--from-yaml", str(tmp_path / "p.yaml"))
    assert from_json == from_yaml and from_json[0] == 0
    assert "<appearance>red_hair</appearance>" in from_json[1]


def test_build_bad_json_is_exit_2(capsys, tmp_path):
    (tmp_path / "p.json").write_text('{"characters": [{"apperance": "x"}]}', encoding="utf-8")
    code, _, err = run(capsys, "build", "--from-json", str(tmp_path / "p.json"))
    assert code == 2 and "did you mean 'appearance'?" in err and err.count("\n") == 1


def test_expand(capsys):
    code, out, _ = run(
        capsys, "expand", "two girls, one with red hair on the left, one with blue hair on the right"
    )
    assert code == 0
    assert [ch.position for ch in parse(out).characters] == [["left"], ["right"]]


def test_subcommand_is_required():
    parser = argparse.ArgumentParser(prog="newbie")
    cli.add_parser(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit):
        parser.parse_args(["prompt"])

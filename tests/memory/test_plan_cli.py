"""`newbie plan --size`: the request's one size parser, its error one line with exit 2."""

from newbie.cli.main import main


def test_plan_size_uses_the_one_size_parser(capsys):
    assert main(["plan", "--vram", "8", "--size", "1024x1024"]) == 0
    assert "predicted peak" in capsys.readouterr().out
    assert main(["plan", "--vram", "8", "--size", "big"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: size must look like WIDTHxHEIGHT (e.g. 1024x1024) or 'auto', got 'big'"
    assert main(["plan", "--vram", "8", "--size", "auto"]) == 2
    assert "needs a size" in capsys.readouterr().err

"""The generate flags come from the Settings rules: one flag per field, each default shown once, and the
parsed flags back into Settings."""

import argparse
import re

from newbie.cli.main import build_parser
from newbie.cli.request_args import BUILT_HERE, flag, given_settings, settings_from_args
from newbie.pipeline.request import Settings


def _generate_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["generate"]


def test_every_setting_has_a_flag_with_its_help_and_one_default():
    parser = _generate_parser()
    by_dest = {a.dest: a for a in parser._actions}
    for name in Settings.fields():
        if name in BUILT_HERE:
            continue
        action = by_dest[name]
        assert flag(name) in action.option_strings, name
        assert Settings.rule(name).help in action.help, name
    text = parser.format_help()
    assert "(default: None)" not in text and "%(default" not in text
    flat = re.sub(r"\s+", " ", text)
    assert "sampler steps (default: 18)" in flat and "(default: 0.25)" in flat
    assert "(default: 1024x1024)" in flat
    for line in re.split(r"\n  -", text):
        assert line.count("(default") <= 1, line


def test_parsed_flags_are_settings_and_unset_flags_are_left_to_the_model():
    parser = _generate_parser()
    args = parser.parse_args(["1girl", "--steps", "4", "--size", "64x32", "--lora", "a.safetensors:0.5"])
    assert given_settings(args) == {"steps": 4, "width": 64, "height": 32, "loras": ["a.safetensors:0.5"]}
    s = settings_from_args(args)
    assert s == Settings(prompt="1girl", steps=4, width=64, height=32, loras=["a.safetensors:0.5"])
    kept = settings_from_args(parser.parse_args(["x", "--steps", "5.5", "--sampler", "ddim"]))
    assert (kept.steps, kept.sampler) == ("5.5", "ddim")  # left for the rule's own message

"""The request flags of `newbie generate`, derived from the Settings rules (pipeline/request.py): one flag per
field with its type, choices and help, and each default shown once (the NewBie model's; a model folder may
set its own). The parsed flags go back into Settings, and are checked against the model's spec before any
weight loads. No torch import: the parser is built on every `newbie` call."""

from __future__ import annotations

import argparse

from newbie.cli.model_args import read_prompt
from newbie.config import SPECS
from newbie.errors import NewbieError
from newbie.pipeline.request import Settings, model_default, parse_size

# Fields whose flag is not `--field-name`, and those built here by hand: the prompt is positional, width and
# height come from --size, hires from --hires and its three companion flags.
FLAG_NAMES = {"loras": "--lora", "fuse_loras": "--fuse-lora"}
BUILT_HERE = ("prompt", "width", "height", "hires")
METAVARS = {"loras": "PATH[:STRENGTH]", "init_image": "PNG", "mask": "PNG", "mask_feather": "PX", "seed": "N"}
WORKFLOW = ("loras", "fuse_loras", "init_image", "strength", "mask", "mask_feather")
HIRES_FLAGS = ("hires_upscaler", "hires_strength", "hires_steps")


def _lenient(kind: type):
    """A flag type that converts what it can and leaves the rest as text, so that the request's own rule
    refuses it with the message every other door gives ('steps must be a whole number, got '5.5' (str)')."""

    def convert(text: str):
        try:
            return kind(text)
        except ValueError:
            return text

    convert.__name__ = kind.__name__
    return convert


TYPES = {"int": _lenient(int), "float": _lenient(float), "str": str, "any": str}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" only where a flag has a default to show and its help does not state it already."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "(default" in text:
            return text
        return super()._get_help_string(action)


def flag(name: str) -> str:
    return FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def default_text(name: str) -> str:
    """What an unset field means, as the help shows it: NewBie's default, or the rule's own words."""
    rule = Settings.rule(name)
    if rule.model:
        value = model_default(name, SPECS["newbie-exp0.1"])
        return "empty" if value == "" else f"{value:g}" if isinstance(value, float) else str(value)
    if rule.default_text:
        return rule.default_text
    value = Settings.__dataclass_fields__[name].default
    return "" if value in (None, False) else str(value)


def _help(name: str) -> str:
    shown = default_text(name)
    return Settings.rule(name).help + (f" (default: {shown})" if shown else "")


def add_request_args(g: argparse.ArgumentParser) -> None:
    """The prompt and one flag per Settings field (newbie.pipeline.request)."""
    g.add_argument("prompt", nargs="?", help=Settings.rule("prompt").help + "; @file reads it from a file")
    workflow = g.add_argument_group("adapters and image inputs")
    for name in Settings.fields():
        if name in BUILT_HERE:
            continue
        rule = Settings.rule(name)
        kwargs: dict = {"dest": name, "help": _help(name)}
        if rule.kind == "bool":
            kwargs["action"] = "store_true"
        elif rule.kind == "list":
            kwargs["action"] = "append"
        else:
            kwargs["type"] = TYPES[rule.kind]
        if rule.choices:  # shown, not enforced by argparse: the rule's message is the same through every door
            kwargs["metavar"] = "{" + ",".join(rule.choices) + "}"
        if name in METAVARS:
            kwargs["metavar"] = METAVARS[name]
        (workflow if name in WORKFLOW else g).add_argument(flag(name), **kwargs)
    d = SPECS["newbie-exp0.1"].sampling
    g.add_argument(
        "--size",
        metavar="WxH",
        help=f"image size, multiples of 16, or auto (default: {d.width}x{d.height})",
    )
    workflow.add_argument(
        "--hires",
        nargs="?",
        const="2",
        metavar="SCALE|WxH",
        help="generate at --size, upscale (default 2x) and refine with a short img2img pass",
    )
    workflow.add_argument(
        "--hires-upscaler", choices=["latent", "pixel"], help="pixel (Lanczos + VAE, default) or latent"
    )
    workflow.add_argument("--hires-strength", type=float, help="noise level of the hires pass (default 0.5)")
    workflow.add_argument("--hires-steps", type=int, help="steps of the hires pass (default half of --steps)")


def given_settings(args) -> dict:
    """The Settings fields the command line sets (unset flags are left out: the model's defaults apply)."""
    values = {name: getattr(args, name, None) for name in Settings.fields() if name not in BUILT_HERE}
    values["width"], values["height"] = parse_size(getattr(args, "size", None))
    values["hires"] = _hires(args)
    return {k: v for k, v in values.items() if v is not None and v is not False}


def settings_from_args(args) -> Settings:
    """The generate flags -> the one request schema, `Settings` (recipes and the API build the same object)."""
    return Settings(prompt=read_prompt(args.prompt) if args.prompt else "", **given_settings(args))


def remake_overrides(args) -> dict:
    """With --from: files given again replace the recorded paths (their contents are checked against it)."""
    return dict(loras=list(args.loras or []), init_image=args.init_image, mask=args.mask)


def _hires(args) -> dict | None:
    if getattr(args, "hires", None) is None:
        if any(getattr(args, name, None) is not None for name in HIRES_FLAGS):
            raise NewbieError("--hires-upscaler/--hires-strength/--hires-steps need --hires")
        return None
    from newbie.pipeline.img2img import parse_hires_text

    hires = {"upscaler": args.hires_upscaler, "strength": args.hires_strength, "steps": args.hires_steps}
    hires.update(parse_hires_text(args.hires))
    return hires

"""`newbie` command line: parse -> load -> generate -> save. Errors are one line on stderr
(newbie.errors.describe): exit 2 for bad input, 1 for a failed run; the traceback only with --debug or
NEWBIE_DEBUG=1."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from newbie.cli.model_args import add_model_args, load_from_args, read_prompt, spec_from_args
from newbie.cli.output import write_generation
from newbie.cli.registry import register
from newbie.cli.request_args import (
    HelpFormatter,
    add_request_args,
    given_settings,
    remake_overrides,
    settings_from_args,
)
from newbie.errors import NewbieError, debug_enabled, describe, failure_context
from newbie.pipeline.request import Settings, check

# Each feature package registers its own subcommands with add_parser(subparsers); heavy imports stay inside run.
COMMAND_MODULES = (
    "newbie.cli.prompts",
    "newbie.cli.precision",
    "newbie.cli.plan",
    "newbie.cli.bench",
    "newbie.cli.ui",
    "newbie.cli.serve",
    "newbie.cli.adapters",
    "newbie.cli.train",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="newbie", description="NewBie image Exp0.1 inference engine")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="text or XML prompt -> PNG", formatter_class=HelpFormatter)
    add_request_args(g)  # the prompt and one flag per request setting (newbie.cli.request_args)
    g.add_argument(
        "--from",
        dest="from_image",
        help="re-make an image from the recipe in its PNG, or the NewBie "
        "workflow in a ComfyUI PNG (docs/comfyui.md)",
    )
    g.add_argument("--out", default="outputs/newbie.png", help="output PNG (a batch adds -1, -2, ...)")
    g.add_argument("--quiet", action="store_true")
    add_model_args(g)
    g.add_argument(
        "--parallel",
        help="sp:N, cfg:2 or cfg:2,sp:N: one image on several GPUs (or CPU processes "
        "with --device cpu); see newbie.parallel",
    )
    g.set_defaults(func=cmd_generate)

    i = sub.add_parser(
        "inspect", help="check every component of a model folder (or single files) and name its format"
    )
    i.add_argument("model", nargs="?", help="model folder, transformer file, or ComfyUI models/ folder")
    i.add_argument("--text-encoder", help="Gemma3 folder or ComfyUI file")
    i.add_argument("--clip-model", help="Jina CLIP v2 folder or ComfyUI file")
    i.add_argument("--vae", help="VAE folder or single file")
    i.add_argument("--comfy-dir", help="a ComfyUI models/ folder supplying the components not given")
    i.set_defaults(func=cmd_inspect)

    register(sub, COMMAND_MODULES)
    _add_debug(parser, default=False)
    return parser


def _add_debug(parser: argparse.ArgumentParser, default) -> None:
    """--debug anywhere on the line (before or after a subcommand): subparsers leave it unset unless given."""
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="show the full traceback of an error (also NEWBIE_DEBUG=1)",
    )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                _add_debug(subparser, default=argparse.SUPPRESS)


def cmd_generate(args) -> int:
    if getattr(args, "parallel", None):
        from newbie.cli.parallel import cmd_generate_parallel

        if not args.from_image:
            check(settings_from_args(args), spec_from_args(args))
        return cmd_generate_parallel(args)
    from newbie.cli.progress import ProgressBar
    from newbie.pipeline.img2img import total_steps

    recipe, comfy = from_image(args) if args.from_image else (None, None)
    if recipe is None and comfy is None and not args.prompt:
        raise NewbieError("give a prompt (or @file, or --from IMAGE.png)")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise NewbieError(f"--out must be a .png path, got '{out}'")
    settings = None
    if recipe is None:
        settings = comfy_settings(comfy.settings, args) if comfy is not None else settings_from_args(args)
        check(settings, spec_from_args(args))  # a bad setting fails before any weight loads
    dtype = recipe.dtype if recipe and args.dtype == "auto" else args.dtype
    dtype, _, recipe_quant = dtype.partition("+")  # a quantized recipe records e.g. "bf16+int8"
    size = (recipe.width, recipe.height) if recipe else (settings.width, settings.height)
    size = size if all(size) else None  # the plan's size; None: the model's default
    pipe = load_from_args(
        args,
        dtype=dtype,
        text_dtype=args.text_dtype or (recipe.text_dtype if recipe else None),
        vae_dtype=recipe.vae_dtype if recipe and args.vae_dtype == "fp32" else args.vae_dtype,
        plan_size=size,
        quantize=args.quantize or recipe_quant or None,
    )
    if pipe.plan is not None and not args.quiet:
        print(pipe.plan.describe(), file=sys.stderr)
    if args.compile:
        pipe.compile()
    if pipe.notice and not args.quiet:
        print(pipe.notice, file=sys.stderr)
    if recipe is not None:
        if recipe.model_hash != pipe.model_hash:
            print(
                f"warning: the recipe was made with model {recipe.model_hash[:10]}, this is {pipe.model_hash[:10]}",
                file=sys.stderr,
            )
    else:
        for note in comfy.notes if comfy is not None else ():
            print(note, file=sys.stderr)
        req = pipe.request(settings)
    # the stream is passed at call time: ProgressBar's default is whatever sys.stderr was at its first import
    made = recipe if recipe is not None else req
    with failure_context(size=(made.width, made.height), plan=pipe.plan.name if pipe.plan else None):
        if recipe is not None:
            bar = ProgressBar(total_steps(recipe), stream=sys.stderr)
            gen = pipe.remake(recipe, progress=None if args.quiet else bar, **remake_overrides(args))
        else:
            gen = pipe.run(
                req, progress=None if args.quiet else ProgressBar(req.total_steps, stream=sys.stderr)
            )
    write_generation(gen, out, args.quiet)
    return 0


def from_image(args):
    """--from: (recipe, None) for a newbie PNG, (None, ComfyImport) for a ComfyUI PNG, else a one-line error."""
    from newbie.pipeline.comfy_png import is_comfy, read_comfy_png
    from newbie.pipeline.recipe import PNG_KEY, Recipe, png_chunks

    path = Path(args.from_image)
    info = png_chunks(path)
    if isinstance(info.get(PNG_KEY), str):
        return Recipe.from_json(info[PNG_KEY]), None
    if is_comfy(info):
        return None, read_comfy_png(path, info)
    raise NewbieError(f"{path}: this PNG carries neither a newbie recipe nor a ComfyUI graph")


def comfy_settings(settings: Settings, args) -> Settings:
    """A ComfyUI graph's settings, with the generate flags given on the command line taking precedence."""
    given = given_settings(args)
    if args.prompt:
        given["prompt"] = read_prompt(args.prompt)
    return settings.replace(**given)


def cmd_inspect(args) -> int:
    from newbie.config import SPECS
    from newbie.loading.folder import inspect_folder, locate

    if args.model is None and args.comfy_dir is None:
        raise NewbieError("give a model folder or file, or --comfy-dir")
    folder = locate(args.model, args.text_encoder, args.clip_model, args.vae, comfy_dir=args.comfy_dir)
    for note in folder.notes:
        print(note, file=sys.stderr)
    reports = inspect_folder(folder, SPECS["newbie-exp0.1"].dit)
    for r in reports:
        print(r.line())
    damaged = [r for r in reports if r.found and not r.ok]
    if damaged:
        for r in damaged:
            print(f"error: {r.name}: {r.problem}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    import logging

    # torchao (pulled in by diffusers when installed) registers pytree types noisily at import
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    logging.getLogger("torchao").setLevel(
        logging.ERROR
    )  # its CUDA-only kernels fail to load on CPU, harmlessly
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.debug:
        os.environ["NEWBIE_DEBUG"] = "1"  # and to what this command starts: the Streamlit page, Ray replicas
    try:
        return args.func(args)
    except (Exception, KeyboardInterrupt) as e:  # no traceback reaches a user unless asked for
        message, code = describe(e)
        if debug_enabled():
            traceback.print_exc()
        print(message if code == 130 else f"error: {message}", file=sys.stderr)
        return code

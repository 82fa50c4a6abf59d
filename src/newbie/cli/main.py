"""`newbie` command line: parse -> load -> generate -> save. Errors are one line on stderr
(newbie.errors.describe): exit 2 for bad input, 1 for a failed run; the traceback only with --debug or
NEWBIE_DEBUG=1."""

from __future__ import annotations

import argparse
import os
import sys
import time
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
from newbie.loading.prefetch import prefetch, weight_paths
from newbie.pipeline.request import Settings, check

STARTED = time.perf_counter()  # the command's clock starts with the CLI's first import (torch comes later)

# Each feature package registers its own subcommands with add_parser(subparsers); heavy imports stay inside run.
COMMAND_MODULES = (
    "newbie.cli.prompts",
    "newbie.cli.precision",
    "newbie.cli.plan",
    "newbie.cli.bench",
    "newbie.cli.ui",
    "newbie.cli.serve",
    "newbie.cli.adapters",
    "newbie.cli.convert",
    "newbie.cli.train",
)


def build_parser() -> argparse.ArgumentParser:
    from newbie import __version__

    parser = argparse.ArgumentParser(prog="newbie", description="NewBie image Exp0.1 inference engine")
    parser.add_argument("--version", action="version", version=f"newbie {__version__}")
    sub = parser.add_subparsers(dest="command")

    g = sub.add_parser("generate", help="text or XML prompt -> PNG", formatter_class=HelpFormatter)
    add_request_args(g)  # the prompt and one flag per request setting (newbie.cli.request_args)
    g.add_argument(
        "--from",
        dest="from_image",
        help="re-make an image from the recipe in its PNG, or the NewBie "
        "workflow in a ComfyUI PNG (docs/comfyui.md)",
    )
    g.add_argument(
        "--out",
        help="output PNG (a batch adds -1, -2, ...), or a folder for numbered names (default: the next free "
        "number in outputs/: outputs/newbie_00001.png, outputs/newbie_00002.png, ...)",
    )
    g.add_argument(
        "--allow-other-model",
        action="store_true",
        help="with --from: re-make even when the loaded model's components differ from the recipe's",
    )
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
    # the disk reads the weights while torch imports (the checks below import it): newbie.loading.prefetch
    prefetch(weight_paths(args.model, args.text_encoder, args.clip_model, args.vae))
    out = preflight(args)  # the files and the device, before loading anything
    if getattr(args, "parallel", None):
        from newbie.cli.parallel import cmd_generate_parallel

        return cmd_generate_parallel(args, out)
    from newbie.cli.progress import ProgressBar

    recipe, comfy = from_image(args) if args.from_image else (None, None)
    if recipe is None and comfy is None and not args.prompt:
        raise NewbieError("give a prompt (or @file, or --from IMAGE.png)")
    settings = request_settings(args, recipe, comfy)  # None: --from alone, the recipe re-made as it was
    if settings is not None:
        check(settings, spec_from_args(args))  # a bad setting fails before any weight loads
    if recipe is not None:  # may hash the model's ~16 GB once (then cached): after the cheap checks
        check_recipe_model(recipe, args)
    dtype = recipe.dtype if recipe and args.dtype == "auto" else args.dtype
    dtype, _, recipe_quant = dtype.partition("+")  # a quantized recipe records e.g. "bf16+int8"
    size = (settings.width, settings.height) if settings else (recipe.width, recipe.height)
    size = size if all(size) else None  # the plan's size; None: the model's default
    phases = {"setup_s": time.perf_counter() - STARTED}  # imports and every check before the weights
    t0 = time.perf_counter()
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
    phases["load_s"] = time.perf_counter() - t0
    if args.compile:
        t0 = time.perf_counter()
        pipe.compile()
        phases["compile_s"] = time.perf_counter() - t0
    if pipe.notice and not args.quiet:
        print(pipe.notice, file=sys.stderr)
    for note in comfy.notes if comfy is not None else ():
        print(note, file=sys.stderr)
    req = None if settings is None else pipe.request(settings)
    made = recipe if req is None else req
    with failure_context(size=(made.width, made.height), plan=pipe.plan.name if pipe.plan else None):
        # the stream is passed at call time: ProgressBar's default is whatever sys.stderr was at its first import
        if req is None:  # --from alone: the recipe's own batch, re-made bit for bit
            from newbie.pipeline.img2img import total_steps

            bar = None if args.quiet else ProgressBar(total_steps(recipe), stream=sys.stderr)
            gen = pipe.remake(recipe, progress=bar, **remake_overrides(args))
        else:
            bar = None if args.quiet else ProgressBar(req.total_steps, stream=sys.stderr)
            gen = pipe.run(req, progress=bar)
    write_generation(gen, out, args.quiet, phases, STARTED)
    return 0


def preflight(args):
    """Check the output folder, the device and the input files before any weights load (the settings, the
    prompt's XML included, are the request schema's to check: pipeline.request.check); returns where the images
    go (cli.output.OutputSpec)."""
    from newbie.cli import preflight as checks
    from newbie.cli.output import output_spec

    spec = output_spec(args.out)
    if not getattr(args, "parallel", None):  # --parallel takes device lists, checked by its own preflight
        checks.check_device(args.device)
    checks.check_files(args)
    return spec


def request_settings(args, recipe, comfy) -> Settings | None:
    """What to make: the flags alone; a ComfyUI graph's settings or (--from) the image's own recipe, each changed
    by the flags given (a recipe changed so is one image, at its own seed unless --seed is given). None: --from
    alone, the recipe's own batch re-made bit for bit."""
    if recipe is None and comfy is None:
        return settings_from_args(args)
    given = given_settings(args)
    if args.prompt:
        given["prompt"] = read_prompt(args.prompt)
    if comfy is not None:
        return comfy.settings.replace(**given)
    for name in ("loras", "init_image", "mask"):  # with --from these only say where the recipe's inputs moved
        given.pop(name, None)
    if not given:
        return None
    base = Settings.from_recipe(recipe, **remake_overrides(args))
    return base.replace(**{"seed": recipe.seed, "batch": 1, **given})


def check_recipe_model(recipe, args) -> None:
    """--from: refuse, before loading, a model whose components differ from those that made the image (by the
    hashes the recipe records), unless --allow-other-model."""
    from newbie.demo.model import resolve_model
    from newbie.loading.folder import locate
    from newbie.loading.hashing import component_hashes

    path, _ = resolve_model(args.model, args.comfy_dir)
    folder = locate(path, args.text_encoder, args.clip_model, args.vae, comfy_dir=args.comfy_dir)
    here = component_hashes(folder)
    recorded = recipe.components or {"transformer": recipe.model_hash}  # a recipe older than component hashes
    differ = [name for name, digest in recorded.items() if here.get(name) != digest]
    if not differ:
        return
    what = f"{recipe.model}" if "transformer" in differ else "these weights"
    message = (
        f"--from: the image was made with another {', '.join(differ)} than this model's ({folder.name}); "
        f"give the model that made it (recipe: '{what}') with --model, or --allow-other-model to use this one"
    )
    if not args.allow_other_model:
        raise NewbieError(message)
    if not args.quiet:
        print(
            f"warning: the image was made with another {', '.join(differ)}; re-making with this model",
            file=sys.stderr,
        )


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


def cmd_inspect(args) -> int:
    from newbie.config import SPECS
    from newbie.demo.model import resolve_model
    from newbie.loading.folder import inspect_folder, locate

    if args.model is None and args.comfy_dir is None:
        raise NewbieError("give a model folder or file ('demo' for the embedded demo model), or --comfy-dir")
    path, _ = resolve_model(args.model, args.comfy_dir)
    folder = locate(path, args.text_encoder, args.clip_model, args.vae, comfy_dir=args.comfy_dir)
    for note in folder.notes:
        print(note, file=sys.stderr)
    base = SPECS["newbie-exp0.1"]
    reports = inspect_folder(folder, base.dit)
    for r in reports:
        print(r.line())
    damaged = [r for r in reports if r.found and not r.ok]
    if damaged:
        for r in damaged:
            print(f"error: {r.name}: {r.problem}", file=sys.stderr)
        return 2
    print(model_defaults_line(folder, base))
    return 0


def model_defaults_line(folder, base) -> str:
    """`newbie inspect`'s last line: the sampling defaults this model runs at, and where they come from."""
    from newbie.loading.dit import dit_config
    from newbie.pipeline.model_spec import describe_defaults, model_spec, spec_path

    spec, note = model_spec(folder, base, dit_config(folder.transformer, base.dit))
    where = spec_path(folder) or (
        "the demo model's (from the shapes)" if note and spec is not base else spec.name
    )
    return f"{'defaults':<13} {describe_defaults(spec)}, largest side {spec.max_side}  [{where}]"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `newbie`: what it can do, rather than an error
        parser.print_help()
        return 0
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

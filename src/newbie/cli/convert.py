"""`newbie convert MODEL --to folder|comfy|diffusers OUT`: write a model in another layout we read, each component in
the dtype its source file holds, the model's sampling defaults travelling with it (newbie_spec.json), so the
converted model makes the same images. MODEL is anything `--model` takes ('demo' included), with
--text-encoder/--clip-model/--vae/--comfy-dir for the parts."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from newbie.config import SPEC_FILE
from newbie.errors import NewbieError

LAYOUTS = ("folder", "comfy", "diffusers")
TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help="write a model in another layout: a NewBie model folder, ComfyUI's single files, or diffusers'",
        description="Write MODEL in another layout we read: 'folder' (the official NewBie layout: "
        "transformer/, text_encoder/, clip_model/, vae/) or 'comfy' (a ComfyUI models/ folder: "
        "diffusion_models/, text_encoders/, vae/, each file with its <name>.config.json) or 'diffusers' (the "
        "Disty0 conversion's layout: diffusers key names, text_encoder_2/). Each component keeps "
        "its dtype; the sampling defaults travel as newbie_spec.json.",
    )
    p.add_argument("model", help="model folder, transformer file, ComfyUI models/ folder, or 'demo'")
    p.add_argument("--to", required=True, choices=LAYOUTS, help="the layout to write")
    p.add_argument("out", help="the folder to write (must not exist, or be empty)")
    p.add_argument("--text-encoder", help="Gemma3 folder or ComfyUI file")
    p.add_argument("--clip-model", help="Jina CLIP v2 folder or ComfyUI file")
    p.add_argument("--vae", help="VAE folder or single file")
    p.add_argument("--comfy-dir", help="a ComfyUI models/ folder supplying the components not given")
    p.set_defaults(func=run)


def _check_out(out: Path) -> None:
    from newbie.cli.preflight import check_writable_folder

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise NewbieError(f"{out}: already exists and is not an empty folder; give a new one")
    check_writable_folder(out, "OUT")


def source_dtypes(folder) -> dict[str, str]:
    """Each component's stored dtype (bf16, fp16, fp32), from its file headers."""
    from newbie.config import SPECS
    from newbie.loading.folder import inspect_folder

    out = {}
    for r in inspect_folder(folder, SPECS["newbie-exp0.1"].dit):
        if r.found and not r.ok:
            raise NewbieError(f"{r.name}: {r.problem}")
        out[r.name] = r.dtype if r.dtype in TORCH_DTYPES else "fp32"
    return out


def spec_json(spec) -> dict:
    keep = ("name", "trained_pixels", "max_aspect", "max_side")
    return {**{k: getattr(spec, k) for k in keep}, "sampling": dataclasses.asdict(spec.sampling)}


def run(args: argparse.Namespace) -> int:
    import torch

    import newbie
    from newbie.demo.model import resolve_model
    from newbie.loading.folder import locate

    out = Path(args.out).expanduser()
    _check_out(out)
    path, _ = resolve_model(args.model, args.comfy_dir)
    folder = locate(path, args.text_encoder, args.clip_model, args.vae, comfy_dir=args.comfy_dir)
    stored = source_dtypes(folder)
    # load each part in its own dtype (the two text encoders share one: fp32 when they differ), cast back
    text = stored["text_encoder"] if stored["text_encoder"] == stored["clip_model"] else "fp32"
    pipe = newbie.load(
        path,
        text_encoder=args.text_encoder,
        clip_model=args.clip_model,
        vae=args.vae,
        comfy_dir=args.comfy_dir,
        device="cpu",
        dtype=stored["transformer"],
        text_dtype=text,
        vae_dtype=stored["vae"],
    )
    dtypes = {name: getattr(torch, TORCH_DTYPES[d]) for name, d in stored.items()}
    if args.to == "comfy":
        from newbie.loading.comfy_writer import save_comfy

        save_comfy(out, pipe, dtypes, spec_json(pipe.spec))
    else:
        if args.to == "diffusers":
            from newbie.loading.diffusers_writer import save_diffusers

            save_diffusers(out, pipe, dtypes)
        else:
            save_folder(out, pipe, dtypes)
        (out / SPEC_FILE).write_text(json.dumps(spec_json(pipe.spec), indent=2))
    print(out)
    print(f"{folder.name} -> {args.to} layout in {out}", file=sys.stderr)
    return 0


def save_folder(root: Path, pipe, dtypes: dict) -> None:
    """The official layout (the spec is written beside it by run)."""
    from newbie.loading.writer import save_dit, save_gemma, save_jina, save_vae, write_model_index

    t = pipe.text
    write_model_index(root)
    save_dit(root / "transformer", pipe.dit, dtypes["transformer"])
    save_gemma(root / "text_encoder", t.gemma, t.gemma_tokenizer, dtype=dtypes["text_encoder"])
    save_jina(root / "clip_model", t.jina, t.jina_tokenizer, dtype=dtypes["clip_model"])
    save_vae(root / "vae", pipe.codec.vae)  # loaded in its stored dtype already

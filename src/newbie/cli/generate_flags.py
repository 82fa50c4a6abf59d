"""The artist-workflow flags of `newbie generate` (adapters, img2img, inpainting, hires) and their translation
into Pipeline.request() / remake() arguments. No torch import here: the parser is built on every `newbie`
call."""

from __future__ import annotations

import argparse

# Appended to help texts that state their own default: "%(default).0s" formats to "", and its presence stops
# ArgumentDefaultsHelpFormatter from adding "(default: None)" for flags whose default depends on other flags.
OWN = "%(default).0s"


def add_generate_args(g: argparse.ArgumentParser) -> None:
    a = g.add_argument_group("adapters and image inputs")
    a.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="PATH[:STRENGTH]",
        help="LoRA/LoKr adapter: a PEFT folder or a .safetensors file, strength 1 unless given "
        "(e.g. style.safetensors:0.8); repeat for several" + OWN,
    )
    a.add_argument(
        "--fuse-lora",
        action="store_true",
        help="add the adapters into the weights (no per-step cost; bf16 rounding differs slightly)" + OWN,
    )
    a.add_argument(
        "--init-image",
        metavar="PNG",
        help="img2img: start from this image (size taken from it unless --size is given)" + OWN,
    )
    a.add_argument(
        "--strength",
        type=float,
        help="img2img noise level: 0 keeps the input, 1 ignores it (default 0.6; 1.0 with --mask)" + OWN,
    )
    a.add_argument(
        "--mask", metavar="PNG", help="inpainting: white = repaint, black = keep (needs --init-image)" + OWN
    )
    a.add_argument(
        "--mask-feather",
        type=int,
        metavar="PX",
        help="pixels over which the mask fades in, inside its edge (default 8)" + OWN,
    )
    a.add_argument(
        "--hires",
        nargs="?",
        const="2",
        metavar="SCALE|WxH",
        help="generate at --size, upscale (default 2x) and refine with a short img2img pass" + OWN,
    )
    a.add_argument(
        "--hires-upscaler", choices=["latent", "pixel"], help="pixel (Lanczos + VAE, default) or latent" + OWN
    )
    a.add_argument("--hires-strength", type=float, help="noise level of the hires pass (default 0.5)" + OWN)
    a.add_argument("--hires-steps", type=int, help="steps of the hires pass (default half of --steps)" + OWN)


def request_kwargs(args) -> dict:
    """Pipeline.request() keyword arguments from the parsed flags."""
    hires = None
    if args.hires is not None:
        hires = {"upscaler": args.hires_upscaler, "strength": args.hires_strength, "steps": args.hires_steps}
        hires.update(_hires_size(args.hires))
    elif args.hires_upscaler or args.hires_strength is not None or args.hires_steps is not None:
        from newbie.errors import NewbieError

        raise NewbieError("--hires-upscaler/--hires-strength/--hires-steps need --hires")
    return dict(
        loras=list(args.lora),
        fuse_loras=args.fuse_lora,
        init_image=args.init_image,
        strength=args.strength,
        mask=args.mask,
        mask_feather=args.mask_feather,
        hires=hires,
    )


def remake_overrides(args) -> dict:
    """With --from: files given again replace the recorded paths (their contents are checked against it)."""
    return dict(loras=list(args.lora), init_image=args.init_image, mask=args.mask)


def _hires_size(text: str) -> dict:
    from newbie.pipeline.img2img import parse_hires_text

    return parse_hires_text(text)

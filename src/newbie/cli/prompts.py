"""`newbie prompt check|format|build|expand`: the prompt tools on the command line.

`check` exit codes: 0 clean, 1 warnings, 2 malformed input (one line on stderr).
"""

import argparse
import sys
from pathlib import Path

from newbie.cli.model_args import names_file
from newbie.errors import NewbieError
from newbie.prompts.build import from_json, from_tags, from_yaml
from newbie.prompts.expand import expand
from newbie.prompts.lint import MAX_TOKENS, lint
from newbie.prompts.parse import parse
from newbie.prompts.render import canonical, to_xml
from newbie.prompts.xml_parser import MAX_CHARS, PromptError

PROMPT_HELP = "the prompt text, FILE or @FILE to read it from a file, or - for stdin"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("prompt", help="check, format, build and expand structured (XML) prompts")
    sub = p.add_subparsers(dest="prompt_command", required=True, metavar="{check,format,build,expand}")

    c = sub.add_parser("check", help="lint a prompt: file:line:col: CODE message [character_N]")
    c.add_argument("prompt", help=PROMPT_HELP)
    c.add_argument("--strict", action="store_true", help="accepted for old scripts: warnings always exit 1")
    c.add_argument("--tokenizer", metavar="FILE", help="a tokenizer.json to count tokens exactly (NB108)")
    c.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help="text-encoder token limit")

    f = sub.add_parser("format", help="print the prompt as the encoder gets it, or its canonical form")
    f.add_argument("prompt", help=PROMPT_HELP)
    f.add_argument("--canonical", action="store_true", help="field order, whitespace, underscores, escapes")

    b = sub.add_parser("build", help="build an XML prompt from tags, JSON or YAML")
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-tags", metavar="TAGS", help='a danbooru list, e.g. "1girl, blue_hair, smile"')
    src.add_argument("--from-json", metavar="FILE", help="JSON with characters / general_tags / caption")
    src.add_argument("--from-yaml", metavar="FILE", help="YAML with characters / general_tags / caption")

    e = sub.add_parser(
        "expand", help="turn a short natural-language or tag prompt into XML (rules, or --llm)"
    )
    e.add_argument("prompt", help=PROMPT_HELP)
    e.add_argument(
        "--llm", action="store_true", help="let the model's own Gemma write it (grammar-constrained)"
    )
    e.add_argument("--model", help="model folder whose Gemma to use (default: the embedded demo model)")
    e.add_argument("--text-encoder", help="a Gemma3 folder instead of the model's text_encoder/")
    e.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    e.add_argument(
        "--dtype", default="auto", help="Gemma dtype: auto (bf16 on GPU, fp32 on CPU), bf16, fp16, fp32"
    )
    e.add_argument("--seed", type=int, help="sample with this seed (default: greedy)")
    e.add_argument("--temperature", type=float, default=0.7, help="sampling temperature with --seed")
    e.add_argument("--max-new-tokens", type=int, default=512, help="token budget of the answer")
    e.add_argument(
        "--decoder",
        default="auto",
        help="Gemma's token step: auto (a CUDA graph on CUDA), eager, or compiled (torch.compile'd, then "
        "graphed; compiling takes a while once per process)",
    )

    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    commands = {"check": _check, "format": _format, "build": _build, "expand": _expand}
    try:
        return commands[args.prompt_command](args)
    except PromptError as e:
        name = getattr(args, "_source_name", "<prompt>")
        print(f"{name}:{e.line}:{e.column}: error: {e.message}", file=sys.stderr)
    except (ValueError, OSError, NewbieError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2


def _read(args: argparse.Namespace, value: str) -> str:
    """PROMPT, @FILE or - ; remembers the name errors and warnings are reported against."""
    if value == "-":
        args._source_name = "<stdin>"
        return sys.stdin.read(MAX_CHARS + 1)
    if value.startswith("@"):
        args._source_name = value[1:]
        return _read_file(value[1:])
    if names_file(value):  # a path, not prompt text (the rule `generate` reads its prompt by)
        args._source_name = value
        return _read_file(value)
    args._source_name = "<prompt>"
    return value


def _read_file(path: str) -> str:
    if path == "-":
        return sys.stdin.read(MAX_CHARS + 1)
    with Path(path).open(encoding="utf-8") as fh:
        return fh.read(MAX_CHARS + 1)  # the parser rejects anything longer; no need to read more


def _token_counter(path: str | None):
    if path is None:
        return None
    try:
        from tokenizers import Tokenizer  # only when asked: no heavy import for a plain check

        tok = Tokenizer.from_file(path)
    except Exception as e:  # tokenizers raises a bare Exception for a bad file
        raise ValueError(f"cannot load tokenizer {path}: {e}") from e
    return lambda text: len(tok.encode(text).ids)


def _check(args) -> int:
    text = _read(args, args.prompt)
    warnings = lint(text, count_tokens=_token_counter(args.tokenizer), max_tokens=args.max_tokens)
    for w in warnings:
        where = f"{w.line}:{w.column}:" if w.line else ""
        who = f" [{w.character}]" if w.character else ""
        print(f"{args._source_name}:{where} {w.code} {w.message}{who}")
    return 1 if warnings else 0


def _format(args) -> int:
    text = _read(args, args.prompt)
    if args.canonical:
        print(canonical(text))
    else:
        parse(text)  # validate: the same text goes to the encoder, so a malformed one should fail here
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def _build(args) -> int:
    if args.from_tags is not None:
        prompt = from_tags(args.from_tags)
    elif args.from_json is not None:
        args._source_name = args.from_json
        prompt = from_json(_read_file(args.from_json))
    else:
        args._source_name = args.from_yaml
        prompt = from_yaml(_read_file(args.from_yaml))
    print(to_xml(prompt))
    return 0


def _expand(args) -> int:
    text = _read(args, args.prompt)
    if not args.llm:
        print(to_xml(expand(text)))
        return 0
    from newbie.prompts.llm import expand_llm, load_gemma_only  # torch and the model only when asked for
    from newbie.prompts.llm_model import check_decoder_kind

    check_decoder_kind(args.decoder)  # before loading: a bad name costs nothing
    gemma, tokenizer, device, notice = load_gemma_only(args.model, args.text_encoder, args.device, args.dtype)
    if notice:
        print(notice, file=sys.stderr)
    out = expand_llm(
        text,
        gemma,
        tokenizer,
        seed=args.seed,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        device=device,
        decoder=args.decoder,
    )
    print(out.xml)
    for w in out.warnings:
        print(f"<expanded>:{w}", file=sys.stderr)
    if out.stats is not None:
        s = out.stats
        how = "greedy" if args.seed is None else f"seed {args.seed}, temperature {args.temperature:g}"
        print(
            f"gemma: {s.new_tokens} tokens in {s.decode_s:.2f} s ({s.tokens_per_s:.1f} tok/s, {how}, "
            f"prompt {s.prompt_tokens} tokens in {s.prefill_s:.2f} s, "
            f"decoder {args.decoder} set up in {s.setup_s:.2f} s)",
            file=sys.stderr,
        )
    if out.stats is not None and out.stats.graph_error:
        print(f"note: decoder {args.decoder}: {out.stats.graph_error}", file=sys.stderr)
    if out.note:
        print(f"note: {out.note}", file=sys.stderr)
    return 0

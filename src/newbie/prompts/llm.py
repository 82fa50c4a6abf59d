"""Sentence or tags -> XML prompt with the model's own Gemma3 (the text encoder, used as the chat model it is).

NewBie's text encoder is Gemma3-4B-it, an instruction-tuned chat model whose output head is its tied
embedding table, so the same weights that encode prompts can write them: logits = final-normed hidden @
embed_tokens.weight.T (softcapped when the config says so). No second copy of any weight is made.

The answer is constrained token by token to the XML subset our parser reads, so it always parses:
- structure (`<character_N>`, field tags, `</...>`, `<general_tags>`, `<caption>`) is chosen only among the
  tags allowed at that point, in the canonical field order, each tag's tokens forced once it is unambiguous;
- field text may use any token whose text has no `<`, `>`, `&` or line break, and a field can be closed only
  after it holds a letter or digit (no empty fields);
- every field and the whole answer have a token budget; when it runs out the open tags are closed.
The result is re-rendered by our builder (underscores, `\\(` `\\)` escapes, empty fields dropped) and linted.
Imported only on demand: it needs torch, unlike the rest of newbie.prompts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from newbie.errors import NewbieError

from .build import from_dict
from .expand import expand as rule_expand
from .lint import LintWarning, lint
from .llm_grammar import FIELD_TOKENS as FIELD_TOKENS
from .llm_grammar import MAX_CHARACTERS as MAX_CHARACTERS
from .llm_grammar import TAG_FIELD_TOKENS as TAG_FIELD_TOKENS
from .llm_grammar import GenerationStats, GrammarWriter, _encode, vocab_of
from .llm_grammar import Vocab as Vocab
from .llm_model import StaticDecoder as StaticDecoder
from .llm_model import _indexed as _indexed
from .llm_model import _sync, make_decoder
from .llm_model import lm_logits as lm_logits
from .llm_model import load_gemma_only as load_gemma_only
from .model import CHARACTER_FIELDS, GENERAL_FIELDS
from .parse import parse, prompt_kind
from .render import to_xml

MAX_INPUT_CHARS = 2000

# Our own system prompt, following the rules of the NewBie team's "Danbooru-to-XML" Gemma workflow
# (spec/newbie-exp0.1.md section 5). Gemma has no system role: it goes at the top of the first user turn.
SYSTEM_PROMPT = f"""You turn a short image description (a sentence or a list of Danbooru tags) into the XML \
prompt of the NewBie anime image model. Rules:
- Answer with XML only: one <character_N> block per person (N = 1, 2, ...), then <general_tags>, then <caption>.
- Character fields, in this order: {" ".join(f"<{f}>" for f in CHARACTER_FIELDS)}.
- General fields, in this order: {" ".join(f"<{f}>" for f in GENERAL_FIELDS)}.
- Field values are comma-separated Danbooru tags with underscores. Keep every tag the user gave verbatim.
- Escape parentheses inside tags as \\( and \\).
- A named character's Danbooru name goes in <n>; write $character_N$ when no name is given.
- Leave out every field that would be empty.
- <caption> is one or two plain English sentences describing the whole image, without underscores."""

# Few-shot examples, rendered by our own builder so they show exactly the layout the grammar enforces.
_EXAMPLES = [
    (
        "saber (fate) in armor holding a sword on a hill at sunset, a boy with short black hair watching her",
        {
            "characters": [
                {
                    "n": "saber_(fate)",
                    "gender": "1girl",
                    "appearance": "blonde_hair, green_eyes, ahoge, braid",
                    "clothing": "armor, armored_dress, blue_dress",
                    "expression": "serious",
                    "action": "standing, holding_sword",
                    "position": "left",
                },
                {
                    "gender": "1boy",
                    "appearance": "black_hair, short_hair",
                    "action": "watching",
                    "position": "right",
                },
            ],
            "general_tags": {
                "count": "1girl, 1boy",
                "style": "anime_style",
                "background": "hill, sunset, sky",
                "lighting": "backlighting",
                "other": "fate_(series)",
            },
            "caption": "Saber in blue and silver armor stands on a hill at sunset holding a sword while a boy "
            "with short black hair watches her.",
        },
    ),
    (
        "1girl, solo, silver_hair, red_eyes, maid, smile, looking_at_viewer, indoors",
        {
            "characters": [
                {
                    "gender": "1girl",
                    "appearance": "silver_hair, red_eyes",
                    "clothing": "maid",
                    "expression": "smile, looking_at_viewer",
                },
            ],
            "general_tags": {"count": "solo", "background": "indoors"},
            "caption": "A smiling maid with silver hair and red eyes looks at the viewer in a room.",
        },
    ),
]


def examples() -> list[tuple[str, str]]:
    """(user text, XML answer) pairs of the few-shot prompt."""
    return [(text, to_xml(from_dict(data))) for text, data in _EXAMPLES]


def chat_text(user: str) -> str:
    """The conversation in Gemma's chat format (system prompt in the first user turn), ending where the
    model's answer starts. The tokenizer adds <bos>."""
    turns = []
    for i, (text, answer) in enumerate(examples()):
        content = f"{SYSTEM_PROMPT}\n\n{text}" if i == 0 else text
        turns.append(
            f"<start_of_turn>user\n{content}<end_of_turn>\n<start_of_turn>model\n{answer}<end_of_turn>\n"
        )
    turns.append(f"<start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n")
    return "".join(turns)


def generate_xml(
    gemma,
    tokenizer,
    text: str,
    *,
    seed: int | None = None,
    temperature: float = 0.7,
    max_new_tokens: int = 512,
    device=None,
    decoder: str = "auto",
) -> tuple[str, GenerationStats]:
    """The raw XML Gemma writes for `text` under the grammar, and how it went. Greedy when seed is None."""
    if max_new_tokens < 1:
        raise NewbieError("max_new_tokens must be at least 1")
    if seed is not None and not temperature > 0:
        raise NewbieError("sampling with a seed needs a temperature > 0")
    device = torch.device(device) if device is not None else gemma.norm.weight.device
    stats = GenerationStats()
    t0 = time.perf_counter()
    vocab_size = gemma.embed_tokens.weight.shape[0]
    voc = vocab_of(tokenizer, vocab_size)
    out_device = gemma.embed_tokens.weight.device  # logits live with the table (on the CPU in some plans)
    blocked = ~voc.content.to(out_device)
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    prompt_ids = bos + _encode(tokenizer, chat_text(text))
    stats.prompt_tokens = len(prompt_ids)
    # aligned rows suit the attention kernels; a compiled step is compiled once per cache length, so its
    # lengths come in coarser steps (a few more masked rows to read; fewer compiles in a long-lived process)
    align = 256 if decoder == "compiled" else 64
    cache_len = -(-(len(prompt_ids) + max_new_tokens + 1) // align) * align
    dec = make_decoder(gemma, cache_len, device, decoder)
    stats.decoder, stats.graph, stats.graph_error = type(dec).__name__, dec.graph is not None, dec.graph_error
    stats.compiled = getattr(dec, "compiled", None) is not None
    gen = torch.Generator(device=out_device).manual_seed(seed) if seed is not None else None
    _sync(device)
    stats.setup_s = time.perf_counter() - t0
    writer = GrammarWriter(dec, tokenizer, voc, blocked, stats, max_new_tokens, gen, temperature)

    t1 = time.perf_counter()
    logits = dec.prefill(prompt_ids)
    _sync(device)
    stats.prefill_s = time.perf_counter() - t1
    t1 = time.perf_counter()
    xml = writer.document(logits)
    _sync(device)
    stats.decode_s = time.perf_counter() - t1
    return xml, stats


# ---------------------------------------------------------------------------------------------------------
# The expander


@dataclass
class Expansion:
    xml: str
    warnings: list[LintWarning] = field(default_factory=list)
    source: str = "llm"  # "llm", "rules" (no Gemma loaded) or "input" (the text was XML already)
    raw: str = ""  # what Gemma wrote, before our builder re-rendered it
    stats: GenerationStats | None = None
    note: str = ""


def expand_llm(
    text: str,
    gemma=None,
    tokenizer=None,
    *,
    seed: int | None = None,
    temperature: float = 0.7,
    max_new_tokens: int = 512,
    device=None,
    decoder: str = "auto",
) -> Expansion:
    """XML for `text` written by Gemma under the grammar; the rule-based expander when no Gemma is given."""
    if len(text) > MAX_INPUT_CHARS:
        raise NewbieError(f"the text to expand is {len(text)} characters; the limit is {MAX_INPUT_CHARS}")
    if not text.strip():
        raise NewbieError("nothing to expand: the text is empty")
    if prompt_kind(text) == "xml":
        xml = to_xml(parse(text))
        return Expansion(xml, lint(xml), "input", note="the text is an XML prompt already")
    if gemma is None or tokenizer is None:
        xml = to_xml(rule_expand(text))
        return Expansion(xml, lint(xml), "rules", note="no Gemma loaded: rule-based expansion")
    with torch.no_grad():
        raw, stats = generate_xml(
            gemma,
            tokenizer,
            text,
            seed=seed,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            device=device,
            decoder=decoder,
        )
    prompt = parse(raw)  # cannot fail: the grammar only writes what the parser reads
    if not prompt.caption:  # the budget ended before the caption: the user's own words describe the image
        prompt.caption = " ".join(text.split())
    xml = to_xml(prompt)
    note = "token budget reached: open tags were closed" if stats.truncated else ""
    return Expansion(xml, lint(xml), "llm", raw, stats, note)


def expand_with_pipeline(pipe, text: str, **kwargs) -> Expansion:
    """expand_llm with a loaded Pipeline's Gemma, inside its text stage (a memory plan brings it in)."""
    text_encoders = getattr(pipe, "text", None) if pipe is not None else None
    if text_encoders is None or getattr(text_encoders, "gemma", None) is None:
        return expand_llm(text, **kwargs)
    with pipe.stage("text"):
        return expand_llm(
            text, text_encoders.gemma, text_encoders.gemma_tokenizer, device=text_encoders.device, **kwargs
        )

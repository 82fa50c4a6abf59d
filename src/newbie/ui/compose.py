"""The three ways to write a prompt on the page (text, one card per character, natural language to expand),
and the check shown next to the prompt box. Pure Python over newbie.prompts."""

from __future__ import annotations

from dataclasses import dataclass, field

from newbie.prompts import PromptError, expand, from_dict, lint, parse, to_xml

MODES = ("Text", "Structured", "Expand")
CARD_FIELDS = ("n", "gender", "appearance", "clothing", "expression", "action", "position")
CARD_LABELS = {"n": "name"}  # the XML field is <n>; the card says what it means
GENERAL_CARD_FIELDS = ("count", "background", "atmosphere", "lighting", "objects", "quality", "other")
MAX_CARDS = 6  # lint warns above 4 (NB101); the editor still lets the user try
GEMMA_MAX_NEW_TOKENS = 512  # the answer's token budget when Gemma writes the XML


@dataclass
class PromptCheck:
    error: str | None = None  # the prompt cannot be sent (empty, malformed XML)
    warnings: list[str] = field(default_factory=list)  # lint: it parses but may not do what was meant
    kind: str = "text"  # "xml", "tags" or "text", as the parser reads it


def card_label(name: str) -> str:
    return CARD_LABELS.get(name, name)


def cards_to_xml(cards: list[dict[str, str]], general: dict[str, str]) -> str:
    """Character cards plus general tags -> the XML prompt (to_xml numbers the characters 1..N)."""
    data = {
        "characters": [{k: v for k, v in card.items() if k in CARD_FIELDS and v.strip()} for card in cards],
        "general_tags": {k: v for k, v in general.items() if k in GENERAL_CARD_FIELDS and v.strip()},
    }
    return to_xml(from_dict(data))


def expand_to_xml(text: str) -> str:
    """Natural language (or a tag list) -> XML through the rule-based expander; ValueError if too long."""
    return to_xml(expand(text))


def bad_xml_message(e: PromptError) -> str:
    return f"bad XML at line {e.line}, column {e.column}: {e.message}"


def check_prompt(text: str) -> PromptCheck:
    if not text.strip():
        return PromptCheck(error="the prompt is empty")
    try:
        warnings = lint(text)
    except PromptError as e:
        return PromptCheck(error=bad_xml_message(e), kind="xml")
    except ValueError as e:  # longer than the parser accepts
        return PromptCheck(error=str(e))
    return PromptCheck(warnings=[str(w) for w in warnings], kind=parse(text).kind)


@dataclass
class GemmaExpansion:
    text: str  # the description it was written for: a later edit of the description hides it
    xml: str
    warnings: list[str] = field(default_factory=list)
    line: str = ""  # how it was made, for a caption under the XML


def expand_with_gemma(pipe, text: str, seed: str = "") -> GemmaExpansion:
    """The loaded model's own Gemma writes the XML (grammar-constrained, newbie.prompts.llm); greedy when
    seed is empty. ValueError for a seed that is not a whole number."""
    from newbie.prompts.llm import expand_with_pipeline  # torch-side code only when the button is pressed

    seed = seed.strip()
    if seed and not seed.lstrip("-").isdigit():
        raise ValueError(f"the Gemma seed must be a whole number or empty (greedy), not '{seed}'")
    out = expand_with_pipeline(
        pipe, text, seed=int(seed) if seed else None, max_new_tokens=GEMMA_MAX_NEW_TOKENS
    )
    how = "greedy" if not seed else f"seed {seed}"
    if out.stats is not None:
        line = f"written by Gemma: {out.stats.new_tokens} tokens, {out.stats.tokens_per_s:.0f} tok/s, {how}"
    else:
        line = "rule-based expansion"
    line += f" ({out.note})" if out.note else ""
    return GemmaExpansion(text, out.xml, [str(w) for w in out.warnings], line)

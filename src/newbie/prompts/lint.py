"""Warnings about prompts that parse but will probably not do what the user meant.

Each warning has a stable code (documented in docs/prompts.md), the character it concerns, and the
line:column where the problem was written when the prompt came from text.
"""

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass

from .lexicon import lexicon, normalise
from .model import CHARACTER_FIELDS, GENERAL_FIELDS, Character, Prompt
from .parse import parse
from .render import to_xml

MAX_CHARACTERS = 4
MAX_TOKENS = 512  # Gemma max_length at training and inference (spec 3.1); longer prompts are truncated
CHARS_PER_TOKEN = 4  # rough, used only when no tokenizer is given

CODES = {
    "NB101": "more than 4 characters",
    "NB102": "conflicting attributes inside one character",
    "NB103": "count tag disagrees with the characters",
    "NB104": "unknown XML tag name",
    "NB105": "empty field or block",
    "NB106": "duplicated tag",
    "NB107": "characters numbered with gaps or twice",
    "NB108": "prompt longer than the text encoder's 512 tokens",
    "NB109": "unescaped parentheses in a tag",
}

_COUNT = re.compile(r"([0-9])(\+?)(girl|boy|other)s?")
_MULTIPLE = ("multiple_girls", "multiple_boys", "multiple_others")  # not multiple_views, multiple_hair_bows
_PAREN = re.compile(r"(?<!\\)[()]")
_GENDER = {"1girl": "girl", "1boy": "boy", "1other": "other"}


@dataclass(frozen=True)
class LintWarning:
    code: str
    message: str
    character: str | None = None  # "character_2" (as written) or None for the whole prompt
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = f"{self.line}:{self.column}: " if self.line else ""
        who = f" [{self.character}]" if self.character else ""
        return f"{where}{self.code} {self.message}{who}"


def lint(
    prompt: "str | Prompt",
    count_tokens: Callable[[str], int] | None = None,
    max_tokens: int = MAX_TOKENS,
) -> list[LintWarning]:
    """Warnings for a prompt (text or Prompt); raises PromptError if the text is malformed XML.

    count_tokens, if given, must count what the text encoder sees for this prompt text (the engine can
    pass a closure that adds its system prompt); without it NB108 uses a rough characters/4 estimate.
    """
    p = parse(prompt) if isinstance(prompt, str) else prompt
    out = _Out(p)
    if p.kind == "xml":
        _too_many(p, out)
        _numbering(p, out)
        _count(p, out)
        _unknown_names(p, out)
        for i, ch in enumerate(p.characters):
            _block_checks(ch.fields(), out, ("character", i), _name(ch, i))
        if p.general is not None:
            _block_checks(p.general.fields(), out, ("general",), None)
        if p.style:
            _block_checks([("style", p.style)], out, ("style",), None)
        _empty_caption(p, out)
    elif p.kind == "tags":
        if _count_total(p.tags)[0] in (None, 1):  # a flat list binds nothing, so only a solo one can conflict
            _conflicts([(("tags", i), t) for i, t in enumerate(p.tags)], out, None)
        _tag_checks(p.tags, out, ("tags",), None)
    _length(p, out, count_tokens, max_tokens)
    return sorted(out.warnings, key=lambda w: (w.line or 0, w.column or 0, w.code))


class _Out:
    def __init__(self, prompt: Prompt):
        self.prompt = prompt
        self.warnings: list[LintWarning] = []

    def add(self, code: str, message: str, character: str | None, key: tuple = ()) -> None:
        # Fall back to the enclosing block's position when the exact one was not recorded.
        pos = None
        while key and pos is None:
            pos = self.prompt.positions.get(key)
            key = key[:-1]
        line, col = pos if pos else (None, None)
        self.warnings.append(LintWarning(code, message, character, line, col))


def _number(ch: Character, i: int) -> int:
    return ch.index or i + 1  # characters built in Python are numbered by their order, as to_xml does


def _name(ch: Character, i: int) -> str:
    return f"character_{_number(ch, i)}"


def _too_many(p: Prompt, out: _Out) -> None:
    if len(p.characters) > MAX_CHARACTERS:
        out.add(
            "NB101",
            f"{len(p.characters)} characters: more than {MAX_CHARACTERS} rarely come out as written;"
            " consider moving the extra ones into the caption",
            None,
            ("character", MAX_CHARACTERS),
        )


def _numbering(p: Prompt, out: _Out) -> None:
    seen: dict[int, int] = {}
    for i, ch in enumerate(p.characters):
        n = _number(ch, i)
        if n in seen:
            out.add("NB107", f"character_{n} appears twice", _name(ch, i), ("character", i))
        seen.setdefault(n, i)
    if not seen:
        return
    missing = [n for n in range(1, max(seen) + 1) if n not in seen]
    if missing:
        numbers = ", ".join(str(n) for n in sorted(seen))
        gaps = ", ".join(f"character_{n}" for n in missing)
        first = max(seen)
        out.add(
            "NB107", f"characters are numbered {numbers}: {gaps} missing", None, ("character", seen[first])
        )


def _count_total(tags: list[str]) -> tuple[int | None, bool, dict[str, int]]:
    """(people the count tags state, whether that is exact, exact per-gender counts). 6+ counts as 6."""
    keys = [normalise(t) for t in tags]
    per: dict[str, int] = {}
    for m in filter(None, map(_COUNT.fullmatch, keys)):
        per[m.group(3)] = per.get(m.group(3), 0) + int(m.group(1))
    if per:
        return sum(per.values()), True, per
    if "solo" in keys:
        return 1, True, {}
    if "no_humans" in keys:
        return 0, True, {}
    if any(k in _MULTIPLE for k in keys):
        return 2, False, {}  # "at least two"
    return None, False, {}


def _is_count(tag: str) -> bool:
    key = normalise(tag)
    return bool(_COUNT.fullmatch(key)) or key in ("solo", "no_humans", *_MULTIPLE)


def _count(p: Prompt, out: _Out) -> None:
    if p.general is None or not p.characters:
        return
    tags = p.general.all_tags()
    total, exact, per = _count_total(tags)
    if total is None:
        return
    n = len(p.characters)
    said = ", ".join(t for t in tags if _is_count(t))
    key = ("general", "count")
    plural = "s" * (n != 1)
    if (exact and total != n and not (total == 6 and n > 6)) or (not exact and n < total):
        out.add("NB103", f"count says {said} but the prompt has {n} character{plural}", None, key)
        return
    genders = [
        next((_GENDER[g] for g in map(normalise, ch.gender) if g in _GENDER), None) for ch in p.characters
    ]
    if per and None not in genders:
        actual = {g: genders.count(g) for g in set(genders)}
        if actual != per:
            have = ", ".join(f"{v} {k}{'s' * (v != 1)}" for k, v in sorted(actual.items()))
            out.add("NB103", f"count says {said} but the characters are {have}", None, key)


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean <{close[0]}>?" if close else ""


def _unknown_field(name: str, here: tuple[str, ...], there: tuple[str, ...], there_name: str) -> str:
    if name in there:
        return f"<{name}> belongs in {there_name}"
    return f"unknown field <{name}>{_suggest(name, list(here))}"


def _unknown_names(p: Prompt, out: _Out) -> None:
    for i, ch in enumerate(p.characters):
        for name in ch.extra:
            msg = _unknown_field(name, CHARACTER_FIELDS, GENERAL_FIELDS, "<general_tags>")
            out.add("NB104", msg, _name(ch, i), ("character", i, name))
    if p.general is not None:
        for name in p.general.extra:
            msg = _unknown_field(name, GENERAL_FIELDS, CHARACTER_FIELDS, "a <character_N>")
            out.add("NB104", msg, None, ("general", name))
    top = ["character_1", "general_tags", "caption", "style", "image"]
    for i, block in enumerate(p.unknown):
        if block.name in CHARACTER_FIELDS or block.name in GENERAL_FIELDS:
            where = "a <character_N>" if block.name in CHARACTER_FIELDS else "<general_tags>"
            msg = f"<{block.name}> is a field: put it inside {where}"
        else:
            msg = f"unknown tag <{block.name}>{_suggest(block.name, top)}"
        out.add("NB104", msg, None, ("unknown", i))


def _conflicts(flat: list[tuple[tuple, str]], out: _Out, who: str | None) -> None:
    """Two hair colours or two eye colours, unless a tag says that is intended; points at the second."""
    lex = lexicon()
    keys = {normalise(t) for _, t in flat}
    cats = [(k, t, lex.category(t)) for k, t in flat]
    rules = [
        ("hair_color", "hair", "multicolored_hair", any(c == "hair_multicolor" for _, _, c in cats)),
        ("eye_color", "eye", "heterochromia", "heterochromia" in keys),
    ]
    for cat, what, fix, intended in rules:
        found = {normalise(t): k for k, t, c in reversed(cats) if c == cat}  # first occurrence of each
        if len(found) > 1 and not intended:
            names = list(found)[::-1]
            out.add(
                "NB102",
                f"two {what} colours ({', '.join(names)}); add {fix} if intended",
                who,
                found[names[1]],
            )


def _block_checks(fields: list[tuple[str, list[str]]], out: _Out, key: tuple, who: str | None) -> None:
    written = [(f, tags) for f, tags in fields if (*key, f) in out.prompt.positions or tags]
    if not written and key[0] == "character":
        out.add("NB105", f"{who} has no fields", who, key)
    for f, tags in written:
        if not tags:
            fix = "write a name or $character_N$" if f == "n" else "leave it out"
            out.add("NB105", f"<{f}> is empty; {fix}", who, (*key, f))
    flat = [((*key, f, i), t) for f, tags in written for i, t in enumerate(tags)]
    for k, tag in flat:
        _paren(tag, out, who, k)
    flat = [(k, t) for k, t in flat if k[-2] != "n"]  # a name is not a tag to repeat or colour-check
    _duplicates(flat, out, who)
    if key[0] == "character":
        _conflicts(flat, out, who)


def _tag_checks(tags: list[str], out: _Out, key: tuple, who: str | None) -> None:
    flat = [((*key, i), t) for i, t in enumerate(tags)]
    _duplicates(flat, out, who)
    for k, tag in flat:
        _paren(tag, out, who, k)


def _duplicates(flat: list[tuple[tuple, str]], out: _Out, who: str | None) -> None:
    first: dict[str, tuple] = {}
    for k, tag in flat:
        norm = normalise(tag)
        if norm in first:
            pos = out.prompt.positions.get(first[norm])
            where = f" at {pos[0]}:{pos[1]}" if pos else ""
            out.add("NB106", f"{tag} repeats {norm}{where}", who, k)
        first.setdefault(norm, k)


def _paren(tag: str, out: _Out, who: str | None, key: tuple) -> None:
    if _PAREN.search(tag):
        fixed = _PAREN.sub(lambda m: "\\" + m.group(), tag)
        out.add("NB109", f"unescaped parentheses in {tag}; write {fixed}", who, key)


def _empty_caption(p: Prompt, out: _Out) -> None:
    if p.caption == "":
        out.add("NB105", "<caption> is empty; leave it out", None, ("caption",))


def _length(p: Prompt, out: _Out, count_tokens: Callable[[str], int] | None, max_tokens: int) -> None:
    text = p.source or to_xml(p)
    if count_tokens is not None:
        n = count_tokens(text)
        if n > max_tokens:
            out.add("NB108", f"prompt is {n} tokens; the text encoder keeps the first {max_tokens}", None)
    elif len(text) > max_tokens * CHARS_PER_TOKEN:
        n = len(text) // CHARS_PER_TOKEN
        out.add(
            "NB108",
            f"prompt is roughly {n} tokens (estimated from its length, no tokenizer given);"
            f" the text encoder keeps the first {max_tokens}",
            None,
        )

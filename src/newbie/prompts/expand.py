"""Prompt expansion: a short natural-language or tag prompt -> an XML prompt, by rules (no LLM).

Deterministic and lexicon-driven (data/phrases.json, data/tag_categories.json). Reading left to right:
- "two girls", "a boy", "3 women" introduce characters (girls, boys, others);
- "one", "another", "the other" move to the next character, "the first/second" pick one, "both"/"they" all;
- "long red hair", "blue-eyed", "white shirt" become <modifier>_<noun> tags;
- other words and phrases are looked up in the lexicon ("night sky" -> night_sky, "smiling" -> smile).
Character tags go to the character(s) in focus: the one just introduced or pointed at, or, in a clause
that names nobody, all of them (a position in such a clause moves to the next character instead).
The original sentence is kept as the <caption>, so nothing the rules miss is lost.
"""

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .build import from_tags
from .lexicon import Lexicon, lexicon
from .model import CHARACTER_FIELDS, Character, GeneralTags, Prompt
from .parse import looks_like_tags, parse, prompt_kind
from .xml_parser import MAX_CHARS

_WORDS = re.compile(r"[a-z0-9][a-z0-9'+\-]*|[,.;:!?]")
_MAX_NGRAM = 4


@lru_cache(maxsize=1)
def _phrases() -> dict:
    return json.loads((Path(__file__).parent / "data" / "phrases.json").read_text(encoding="utf-8"))


@dataclass
class _State:
    lex: Lexicon
    chars: list[Character] = field(default_factory=list)
    general: GeneralTags = field(default_factory=GeneralTags)
    focus: list[Character] | None = None  # None: a clause that has named nobody yet
    last: list[Character] = field(default_factory=list)  # the focus before the clause ended
    cursor: int = 0  # the character "one"/"the other" points at next

    def next_char(self) -> Character:
        ch = self.chars[min(self.cursor, len(self.chars) - 1)]
        self.cursor += 1
        return ch

    def add(self, tag: str) -> None:
        fld = self.lex.field(tag)
        if fld not in CHARACTER_FIELDS:
            _append(getattr(self.general, fld), tag)
            return
        if not self.chars:
            self.chars.append(Character(index=1))
        if self.focus is None and fld == "position" and len(self.chars) > 1:
            self.focus = [self.next_char()]  # "..., on the left" describes one of them, not all
        for ch in self.focus or self.chars:
            _append(getattr(ch, fld), tag)


def _append(tags: list[str], tag: str) -> None:
    if tag not in tags:
        tags.append(tag)


def expand(text: str) -> Prompt:
    """XML is returned as parsed; a tag list goes through from_tags; natural language through the rules."""
    if len(text) > MAX_CHARS:
        raise ValueError(f"prompt is {len(text)} characters; the limit is {MAX_CHARS}")
    if prompt_kind(text) == "xml":
        return parse(text)
    if looks_like_tags(text):
        return from_tags(text)
    state = _State(lexicon())
    words = _WORDS.findall(text.lower().replace("_", " "))
    i = 0
    while i < len(words):
        i = _step(state, words, i)
    for n, ch in enumerate(state.chars, 1):
        ch.index = n
    state.general.count = _count_tags(state.chars) + state.general.count
    caption = " ".join(text.split())
    general = state.general if state.general.all_tags() else None
    return Prompt(kind="xml", characters=state.chars, general=general, caption=caption or None)


def _step(state: _State, words: list[str], i: int) -> int:
    """Consume what starts at words[i]; return the index after it."""
    ph = _phrases()
    w = words[i]
    if w in ",.;:!?":
        state.last, state.focus = state.focus or state.last, None
        return i + 1
    end = _pointed_subject(state, words, i) or _introduce(state, words, i)
    if end:
        return end
    end = _coloured(state, words, i)
    if end:
        return end
    for n in range(min(_MAX_NGRAM, len(words) - i), 0, -1):
        gram = words[i : i + n]
        if any(g in ",.;:!?" for g in gram):
            continue
        phrase = " ".join(gram)
        tags = ph["synonyms"].get(phrase) or (
            ["_".join(gram)] if "_".join(gram) in state.lex.category_of else []
        )
        if tags and not (n == 1 and w in ph["stopwords"]):
            for tag in tags:
                state.add(tag)
            return i + n
    if w in ph["subjects"]:
        _bare_subject(state, ph["subjects"][w])
    elif w in ph["markers"]:
        _marker(state, ph["markers"][w], words[i - 1] if i else "")
    return i + 1


def _introduce(state: _State, words: list[str], i: int) -> int:
    """'two girls', 'a tall boy': add characters, put them in focus. Returns the end index or 0."""
    ph = _phrases()
    number = ph["numbers"].get(words[i]) or (
        int(words[i]) if words[i].isdigit() and 0 < int(words[i]) < 7 else 0
    )
    if not number:
        return 0
    for j in range(i + 1, min(i + 4, len(words))):
        w = words[j]
        if w in ph["subjects"]:
            new = [Character(gender=[f"1{ph['subjects'][w]}"]) for _ in range(number)]
            state.chars += new
            state.focus = new
            k = i + 1
            while k < j:  # "two blonde girls": the words between describe them
                k = _step(state, words[:j], k)
            state.focus = new
            return j + 1
        if w == "of" and words[i] in ("pair", "couple", "trio"):
            continue
        if w in ",.;:!?" or w in ph["stopwords"] or w in ph["markers"] or w in ph["numbers"]:
            return 0
    return 0


def _pointed_subject(state: _State, words: list[str], i: int) -> int:
    """'the other girl', 'the second boy', 'the girl', 'one girl' (of those already introduced): focus the
    character meant. Returns the end index or 0."""
    ph = _phrases()
    if i + 1 >= len(words) or words[i + 1] not in ph["subjects"] or not state.chars:
        return 0
    gender = [f"1{ph['subjects'][words[i + 1]]}"]
    same = [ch for ch in state.chars if ch.gender == gender]
    mark = ph["markers"].get(words[i])
    if words[i] in ("other", "another"):
        seen = state.focus or state.last
        rest = [ch for ch in state.chars[state.cursor :] if all(ch is not s for s in seen)]
        if not rest:  # "a girl ..., the other girl ...": there are two
            rest = [Character(gender=gender)]
            state.chars.append(rest[0])
        ch = rest[0]
    elif words[i] == "one" and any(state.chars.index(c) >= state.cursor for c in same):
        ch = next(c for c in same if state.chars.index(c) >= state.cursor)  # "two girls, one girl with ..."
    elif isinstance(mark, int) and mark < len(same):
        ch = same[mark]
    elif words[i] == "the" and len(same) == 1:
        ch = same[0]
    else:
        return 0
    state.cursor = state.chars.index(ch) + 1
    state.focus = [ch]
    return i + 2


def _colour(words: list[str], j: int) -> tuple[str, int] | None:
    """(colour, words used) at words[j], two-word colours first ('light blue')."""
    lex, ph = lexicon(), _phrases()
    if j + 1 < len(words) and f"{words[j]}_{words[j + 1]}" in lex.colors:
        return f"{words[j]}_{words[j + 1]}", 2
    w = ph["colour_words"].get(words[j], words[j])
    return (w, 1) if w in lex.colors or w == "blonde" else None


def _coloured(state: _State, words: list[str], i: int) -> int:
    """'long red hair' -> long_hair, red_hair; 'blue-eyed' -> blue_eyes. Returns the end index or 0."""
    lex, ph = state.lex, _phrases()
    if "-" in words[i]:
        colour, _, noun = words[i].rpartition("-")
        noun = ph["nouns"].get(noun, noun)
        colour = ph["colour_words"].get(colour, colour)
        if noun in lex.colored and f"{colour}_{noun}" in lex.category_of:
            state.add(f"{colour}_{noun}")
            return i + 1
        return 0
    tags, j = [], i
    while j < len(words) and j < i + 6:
        noun = ph["nouns"].get(words[j], words[j])
        if tags and noun in lex.colored:
            for t in tags:
                if f"{t}_{noun}" in lex.category_of:  # known tags only: no blonde_eyes
                    state.add(f"{t}_{noun}")
            return j + 1
        found = _colour(words, j)
        if found:
            tags.append(found[0])
            j += found[1]
        elif j + 1 < len(words) and words[j] not in ph["stopwords"] and _modifies(lex, words[j], words, j):
            tags.append(words[j])
            j += 1
        else:
            return 0
    return 0


def _modifies(lex: Lexicon, word: str, words: list[str], j: int) -> bool:
    """Whether word_<noun> is a known tag for the next colourable noun ('long' in 'long red hair')."""
    for k in range(j + 1, min(j + 5, len(words))):
        noun = _phrases()["nouns"].get(words[k], words[k])
        if noun in lex.colored:
            return f"{word}_{noun}" in lex.category_of
    return False


def _bare_subject(state: _State, gender: str) -> None:
    # "girl with blue hair" (no number), or a character already created by an earlier attribute.
    if not state.chars:
        state.chars.append(Character(gender=[f"1{gender}"]))
    elif not state.chars[-1].gender and len(state.chars) == 1:
        state.chars[-1].gender = [f"1{gender}"]


def _marker(state: _State, kind, previous: str) -> None:
    if not state.chars:
        return
    if kind == "next":
        if previous in _phrases()["markers"]:  # "the other one", "the second one": one step, not two
            return
        state.focus = [state.next_char()]
    elif kind == "all":
        state.focus = list(state.chars)
    elif isinstance(kind, int) and kind < len(state.chars):
        state.focus = [state.chars[kind]]
        state.cursor = kind + 1


def _count_tags(chars: list[Character]) -> list[str]:
    out = []
    for gender in ("girl", "boy", "other"):
        n = sum(1 for ch in chars if ch.gender == [f"1{gender}"])
        if n == 1:
            out.append(f"1{gender}")
        elif n > 1:
            out += [f"{min(n, 6)}{'+' * (n >= 6)}{gender}s", f"multiple_{gender}s"]
    return out

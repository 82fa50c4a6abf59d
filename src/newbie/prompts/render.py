"""Prompt -> XML text, and the canonical rendering offered by `--canonical`.

Canonical means: fields in the README's order, characters renumbered 1..N in index order, one element per
line without indentation, tags with spaces turned into underscores, parentheses escaped as \\( \\) (as the
team's Danbooru-to-XML prompt writes them), duplicates and empty fields dropped. Tag order inside a field
is kept: it is the user's emphasis. By default none of this happens: the user's text reaches the encoder
verbatim.
"""

import re

from .lexicon import normalise
from .model import Character, Prompt
from .parse import parse

_UNESCAPED_PAREN = re.compile(r"(?<!\\)([()])")
_ENTITY_LIKE = re.compile(r"&(?=#?[A-Za-z0-9]+;)")
_MARKUP_LIKE = re.compile(r"<(?=[A-Za-z_/!?])")


def canonical_tag(tag: str) -> str:
    return _UNESCAPED_PAREN.sub(r"\\\1", "_".join(tag.split()))


def _escape(text: str) -> str:
    # Only what would otherwise be read as markup or an entity; everything else stays as the user wrote it.
    return _MARKUP_LIKE.sub("&lt;", _ENTITY_LIKE.sub("&amp;", text))


def canonical_tags(tags: list[str]) -> list[str]:
    """Each tag canonical, duplicates dropped (first one kept), order kept."""
    seen, out = set(), []
    for tag in map(canonical_tag, tags):
        if normalise(tag) not in seen:  # case, spaces vs underscores and escapes do not make a new tag
            seen.add(normalise(tag))
            out.append(tag)
    return out


def _tag_line(tags: list[str]) -> str:
    return _escape(", ".join(canonical_tags(tags)))


def _placeholder(ch: Character, number: int) -> list[str]:
    # The README writes $character_N$ when no name is given; keep it in step with the renumbering.
    if not ch.n or ch.n == [f"$character_{ch.index}$"]:
        return [f"$character_{number}$"]
    return ch.n


def _block(name: str, fields: list[tuple[str, list[str]]]) -> list[str]:
    lines = [f"<{name}>"]
    lines += [f"<{f}>{_tag_line(tags)}</{f}>" for f, tags in fields if tags]
    return lines + [f"</{name}>"]


def to_xml(prompt: Prompt) -> str:
    """Render the structure as an XML prompt, characters numbered 1..N in list order."""
    lines: list[str] = []
    for number, ch in enumerate(prompt.characters, 1):
        fields = [("n", _placeholder(ch, number))] + ch.fields()[1:]
        lines += _block(f"character_{number}", fields)
    if prompt.general is not None and prompt.general.all_tags():
        lines += _block("general_tags", prompt.general.fields())
    if prompt.style:
        lines.append(f"<style>{_tag_line(prompt.style)}</style>")
    if prompt.caption:
        lines.append(f"<caption>{_escape(' '.join(prompt.caption.split()))}</caption>")
    for block in prompt.unknown:
        if block.fields:
            lines += _block(block.name, list(block.fields.items()))
        elif block.text:
            lines.append(f"<{block.name}>{_escape(' '.join(block.text.split()))}</{block.name}>")
    if prompt.image_root:
        lines = ["<image>", *lines, "</image>"]
    return "\n".join(lines)


def canonical(text: str) -> str:
    """The canonical form of any prompt; PromptError if it is malformed XML. Idempotent."""
    prompt = parse(text)
    if prompt.kind == "text":
        return " ".join(text.split())
    if prompt.kind == "tags":
        return ", ".join(canonical_tags(prompt.tags))
    prompt.characters = sorted(prompt.characters, key=lambda ch: ch.index)
    return to_xml(prompt)


__all__ = ["canonical", "canonical_tag", "canonical_tags", "to_xml"]

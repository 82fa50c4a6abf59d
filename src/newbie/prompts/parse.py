"""Prompt text -> Prompt: XML prompts into their typed form; tag lists and plain text passed through."""

import re

from newbie.prompt_kind import prompt_kind

from .model import CHARACTER_FIELDS, GENERAL_FIELDS, Block, Character, GeneralTags, Prompt
from .xml_parser import Element, PromptError, Source, decode, parse_xml, snippet

CHARACTER_NAME = re.compile(r"character_([0-9]{1,4})")
_SENTENCE = re.compile(r"[.!?](\s|$)")


def parse(text: str) -> Prompt:
    """Parse a prompt. XML -> kind "xml" (PromptError if malformed); otherwise kind "tags" or "text"."""
    if prompt_kind(text) == "text":
        return _parse_flat(text)
    src, roots = parse_xml(text)
    prompt = Prompt(kind="xml", source=text)
    if roots and roots[0].name == "image":
        if len(roots) > 1:
            raise src.error("<image> can only wrap the whole prompt", roots[1].start)
        _no_stray_text(src, roots[0])
        prompt.image_root = True
        roots = roots[0].children
    for el in roots:
        _top_level(src, prompt, el)
    return prompt


def looks_like_tags(text: str) -> bool:
    """A danbooru-style list: several comma-separated items, each short, no sentences."""
    items = [t.strip() for t in text.replace("\n", ",").split(",") if t.strip()]
    if len(items) < 2 or _SENTENCE.search(text):
        return False
    words = [len(t.split()) for t in items]
    return max(words) <= 6 and sum(words) / len(words) <= 3


def _parse_flat(text: str) -> Prompt:
    if not looks_like_tags(text):
        return Prompt(kind="text", source=text)
    src = Source(text)
    prompt = Prompt(kind="tags", source=text)
    for offset, tag in _split_positions(text, 0, len(text)):
        prompt.positions[("tags", len(prompt.tags))] = src.pos(offset)
        prompt.tags.append(tag)
    return prompt


def _split_positions(text: str, a: int, b: int):
    """Yield (offset, raw tag) for the comma/newline-separated items of text[a:b], stripped."""
    start = a
    for k in range(a, b + 1):
        if k == b or text[k] in ",\n":
            piece = text[start:k]
            if piece.strip():
                yield start + len(piece) - len(piece.lstrip()), piece.strip()
            start = k + 1


def _tags(src: Source, el: Element) -> list[tuple[tuple[int, int], str]]:
    """A field's tags, decoded, each with the (line, column) where it was written."""
    if el.children:
        child = el.children[0]
        raise src.error(f"<{el.name}> holds tags, not <{child.name}>", child.start)
    out = []
    for a, b in el.segments:
        for offset, _ in _split_positions(src.text, a, b):
            end = offset
            while end < b and src.text[end] not in ",\n":
                end += 1
            out.append((src.pos(offset), decode(src, offset, end).strip()))
    return out


def _record(prompt: Prompt, key: tuple, existing: list[str], found) -> list[str]:
    """existing + the found tags; a merged (repeated) field's positions continue after existing ones."""
    for i, (pos, _) in enumerate(found):
        prompt.positions.setdefault((*key, len(existing) + i), pos)
    return existing + [tag for _, tag in found]


def _text(src: Source, el: Element) -> str:
    if el.children:
        child = el.children[0]
        raise src.error(f"<{el.name}> holds plain text, not <{child.name}>", child.start)
    return "".join(decode(src, a, b) for a, b in el.segments)


def _no_stray_text(src: Source, el: Element) -> None:
    for a, b in el.segments:
        raw = src.text[a:b]
        if raw.strip():
            k = a + len(raw) - len(raw.lstrip())
            hint = " (put it in a field such as <appearance>)" if CHARACTER_NAME.fullmatch(el.name) else ""
            raise src.error(f"stray text {snippet(raw)} directly inside <{el.name}>{hint}", k)


def _fields(src: Source, el: Element, prompt: Prompt, key: tuple, target, known, extra) -> None:
    """Fill target's known fields and the extra dict from el's children; a repeated field is merged."""
    _no_stray_text(src, el)
    for child in el.children:
        fkey = (*key, child.name)
        prompt.positions.setdefault(fkey, src.pos(child.start))
        existing = getattr(target, child.name) if child.name in known else extra.get(child.name, [])
        tags = _record(prompt, fkey, existing, _tags(src, child))
        if child.name in known:
            setattr(target, child.name, tags)
        else:
            extra[child.name] = tags


def _top_level(src: Source, prompt: Prompt, el: Element) -> None:
    m = CHARACTER_NAME.fullmatch(el.name)
    if m:
        ch = Character(index=int(m.group(1)))
        key = ("character", len(prompt.characters))
        prompt.positions[key] = src.pos(el.start)
        prompt.characters.append(ch)
        _fields(src, el, prompt, key, ch, CHARACTER_FIELDS, ch.extra)
    elif el.name == "general_tags":
        if prompt.general is None:
            prompt.general = GeneralTags()
            prompt.positions[("general",)] = src.pos(el.start)
        _fields(src, el, prompt, ("general",), prompt.general, GENERAL_FIELDS, prompt.general.extra)
    elif el.name == "caption":
        prompt.positions.setdefault(("caption",), src.pos(el.start))
        text = _text(src, el).strip()
        prompt.caption = text if prompt.caption is None else f"{prompt.caption} {text}".strip()
    elif el.name == "style":
        prompt.positions.setdefault(("style",), src.pos(el.start))
        prompt.style = _record(prompt, ("style", "style"), prompt.style, _tags(src, el))
    else:
        block = Block(el.name)
        key = ("unknown", len(prompt.unknown))
        prompt.positions[key] = src.pos(el.start)
        if el.children:
            _fields(src, el, prompt, key, block, (), block.fields)
        else:
            block.text = _text(src, el).strip()
        prompt.unknown.append(block)


def check_xml(text: str, name: str = "prompt") -> None:
    """The one XML rule of every door (CLI, Python API, UI, HTTP API): a prompt that is XML must parse.
    Raises NewbieError 'NAME is not valid XML: line L, column C: what' (the server's 422 wording)."""
    from newbie.errors import NewbieError

    if prompt_kind(text) == "text":
        return
    try:
        parse(text)
    except PromptError as e:
        raise NewbieError(f"{name} is not valid XML: line {e.line}, column {e.column}: {e.message}") from None


__all__ = ["PromptError", "check_xml", "looks_like_tags", "parse", "prompt_kind"]

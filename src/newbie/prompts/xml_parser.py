"""A small, safe parser for the XML subset NewBie prompts use.

Why not xml.etree: the subset is tiny (elements and text, nothing else), and owning the tokenizer lets every
error carry a line:column and makes the safety rules plain: no DTD, so no entity expansion and no external
entities; only the five predefined entities and numeric character references; no processing instructions,
comments or CDATA; input size and nesting depth bounded before any work is done. One linear pass, no regex
backtracking, no recursion, so hostile input (billion laughs, deep nesting) fails in well under a millisecond.

A '<' that cannot start markup (`>_<`, `<3`) is read as text: danbooru has such tags, and the text reaches
the encoder verbatim anyway. A bare '&' that is not an entity reference is text too, for the same reason.
"""

import bisect
import re
from dataclasses import dataclass, field

MAX_CHARS = 64 * 1024
# <character_N> > <field> is the model's two levels; an <image> root adds one.
MAX_DEPTH = 2

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_ENTITY = re.compile(r"&(#[0-9]{1,7}|#x[0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]*);")
_PREDEFINED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}
_MARKUP_START = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_/!?")


class PromptError(ValueError):
    """Malformed XML prompt. str() is one line: 'LINE:COL: what is wrong'."""

    def __init__(self, message: str, line: int = 1, column: int = 1):
        super().__init__(f"{line}:{column}: {message}")
        self.message = message
        self.line = line
        self.column = column


@dataclass
class Element:
    name: str
    start: int  # offset of '<'
    children: list["Element"] = field(default_factory=list)
    segments: list[tuple[int, int]] = field(default_factory=list)  # raw text spans [a, b) directly inside


class Source:
    """The text plus offset -> (line, column) lookup."""

    def __init__(self, text: str):
        self.text = text
        self._starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def pos(self, offset: int) -> tuple[int, int]:
        i = bisect.bisect_right(self._starts, offset) - 1
        return i + 1, offset - self._starts[i] + 1

    def error(self, message: str, offset: int) -> PromptError:
        return PromptError(message, *self.pos(offset))


def decode(src: Source, a: int, b: int) -> str:
    """Raw text src.text[a:b] with entity references replaced; unknown named entities are errors."""
    raw = src.text[a:b]
    if "&" not in raw:
        return raw
    out, last = [], 0
    for m in _ENTITY.finditer(raw):
        ref = m.group(1)
        if ref.startswith("#"):
            code = int(ref[2:], 16) if ref[1:2] == "x" else int(ref[1:])
            if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise src.error(f"&{ref}; is not a valid character", a + m.start())
            value = chr(code)
        elif ref in _PREDEFINED:
            value = _PREDEFINED[ref]
        else:
            raise src.error(
                f"unknown entity &{ref};: only &amp; &lt; &gt; &quot; &apos; are allowed", a + m.start()
            )
        out += [raw[last : m.start()], value]
        last = m.end()
    return "".join(out) + raw[last:]


def _markup_start(text: str, i: int) -> int:
    """Offset of the next '<' that starts markup, or -1."""
    while True:
        i = text.find("<", i)
        if i < 0 or (i + 1 < len(text) and text[i + 1] in _MARKUP_START):
            return i
        i += 1


def _name_at(src: Source, i: int, what: str) -> tuple[str, int]:
    m = _NAME.match(src.text, i)
    if not m:
        raise src.error(f"expected a tag name after '{what}'", i)
    return m.group(), m.end()


def _tag_end(src: Source, i: int, name: str, opening: int) -> tuple[int, bool]:
    """Skip whitespace to '>' or '/>'. Returns (offset after it, self_closing)."""
    text = src.text
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    if text.startswith("/>", i):
        return i + 2, True
    if text.startswith(">", i):
        return i + 1, False
    if i < len(text) and _NAME.match(text, i):
        raise src.error(f"<{name}> has attributes; prompt tags take none", i)
    raise src.error(f"<{name} is not closed with '>'", opening)


def _declaration(src: Source, i: int) -> PromptError:
    rest = src.text[i : i + 12].upper()
    if rest.startswith("<!DOCTYPE") or rest.startswith("<!ENTITY"):
        return src.error("DOCTYPE and ENTITY declarations are not allowed in a prompt", i)
    if rest.startswith("<!--"):
        return src.error("comments are not allowed: the prompt text reaches the text encoder verbatim", i)
    if rest.startswith("<![CDATA["):
        return src.error("CDATA sections are not allowed in a prompt", i)
    return src.error("'<!' declarations are not allowed in a prompt", i)


def parse_xml(text: str) -> tuple[Source, list[Element]]:
    """Tokenize and build the element tree. Raises PromptError on anything outside the subset."""
    if len(text) > MAX_CHARS:
        raise PromptError(f"prompt is {len(text)} characters; the limit is {MAX_CHARS}")
    src = Source(text)
    roots: list[Element] = []
    stack: list[Element] = []
    i = 1 if text.startswith("\ufeff") else 0  # a byte-order mark from an editor is not stray text
    while True:
        j = _markup_start(text, i)
        end = len(text) if j < 0 else j
        if i < end:
            if stack:
                stack[-1].segments.append((i, end))
            elif text[i:end].strip():
                k = i + len(text[i:end]) - len(text[i:end].lstrip())
                raise src.error(f"stray text {snippet(text[k:end])} outside any tag", k)
        if j < 0:
            break
        nxt = text[j + 1]
        if nxt == "!":
            raise _declaration(src, j)
        if nxt == "?":
            raise src.error("processing instructions (<?...?>) are not allowed in a prompt", j)
        if nxt == "/":
            name, k = _name_at(src, j + 2, "</")
            i, self_closing = _tag_end(src, k, "/" + name, j)
            if self_closing:
                raise src.error(f"</{name}/> is not a tag; write </{name}>", j)
            _close(src, stack, name, j)
            continue
        name, k = _name_at(src, j + 1, "<")
        i, self_closing = _tag_end(src, k, name, j)
        el = Element(name, j)
        _open(src, stack, roots, el)
        if not self_closing:
            stack.append(el)
    if stack:
        el = stack[-1]
        raise src.error(f"<{el.name}> is never closed", el.start)
    return src, roots


def _open(src: Source, stack: list[Element], roots: list[Element], el: Element) -> None:
    if el.name == "image" and stack:
        raise src.error("<image> can only wrap the whole prompt", el.start)
    limit = MAX_DEPTH + (1 if stack and stack[0].name == "image" else 0)
    if len(stack) >= limit:
        parent = stack[-1]
        raise src.error(
            f"<{el.name}> inside <{parent.name}> nests too deep: prompts have two levels,"
            " <character_N> or <general_tags> holding fields such as <appearance>",
            el.start,
        )
    (stack[-1].children if stack else roots).append(el)


def _close(src: Source, stack: list[Element], name: str, offset: int) -> None:
    if not stack:
        raise src.error(f"</{name}> has no matching <{name}>", offset)
    top = stack[-1]
    if top.name == name:
        stack.pop()
        return
    line, col = src.pos(offset)
    if any(el.name == name for el in stack):
        raise src.error(f"<{top.name}> is not closed before </{name}> at {line}:{col}", top.start)
    tl, tc = src.pos(top.start)
    raise src.error(f"</{name}> does not match <{top.name}> opened at {tl}:{tc}", offset)


def snippet(s: str, width: int = 24) -> str:
    """Short quoted excerpt of text for an error message."""
    s = " ".join(s.split())
    return repr(s if len(s) <= width else s[: width - 3] + "...")

"""Build a Prompt from a dict (JSON, YAML) or from a flat danbooru tag list. Render it with to_xml().

Dict schema, one character per entry:
    {"characters": [{"n": "hatsune_miku", "gender": "1girl", "appearance": ["aqua_hair", "twintails"]}],
     "general_tags": {"count": "1girl", "background": "white_background"},
     "caption": "a girl singing on a stage"}
A bare list is taken as the characters. Values are a comma-separated string or a list of tags.
"""

import difflib
import json
import re

from .lexicon import lexicon, normalise
from .model import CHARACTER_FIELDS, GENERAL_FIELDS, Character, GeneralTags, Prompt, split_tags
from .xml_parser import MAX_CHARS

_TOP_KEYS = ("characters", "general_tags", "general", "caption", "style")
_COUNT = re.compile(r"([0-9])\+?(girl|boy|other)s?")


def _check_keys(data: dict, allowed: tuple[str, ...], where: str) -> None:
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{where}: unknown field {key!r}{hint}")


def _tag_value(value, where: str) -> list[str]:
    if value is None or isinstance(value, str):
        return split_tags(value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value):
        return split_tags([str(v) for v in value])
    raise ValueError(f"{where}: expected a string or a list of tags, got {type(value).__name__}")


def _fields(data, allowed: tuple[str, ...], where: str) -> dict[str, list[str]]:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping of field -> tags, got {type(data).__name__}")
    data = {("n" if k == "name" else k): v for k, v in data.items()}  # "name" reads better in YAML
    _check_keys(data, allowed, where)
    return {k: _tag_value(v, f"{where}.{k}") for k, v in data.items()}


def from_dict(data: "dict | list") -> Prompt:
    """A Prompt from plain data (see the module docstring). ValueError names the bad entry."""
    if isinstance(data, list):
        data = {"characters": data}
    if not isinstance(data, dict):
        raise ValueError(f"expected a mapping or a list of characters, got {type(data).__name__}")
    _check_keys(data, _TOP_KEYS, "prompt")
    chars = data.get("characters") or []
    if not isinstance(chars, list):
        raise ValueError("characters: expected a list, one entry per character")
    prompt = Prompt(kind="xml")
    for i, entry in enumerate(chars):
        fields = _fields(entry, CHARACTER_FIELDS, f"characters[{i}]")
        prompt.characters.append(Character(index=i + 1, **fields))
    general = data.get("general_tags", data.get("general"))
    if general is not None:
        prompt.general = GeneralTags(**_fields(general, GENERAL_FIELDS, "general_tags"))
    caption = data.get("caption")
    if caption is not None and not isinstance(caption, str):
        raise ValueError("caption: expected a string")
    prompt.caption = " ".join(caption.split()) if caption else None
    prompt.style = _tag_value(data.get("style"), "style")
    return prompt


def _bounded(text: str) -> str:
    if len(text) > MAX_CHARS:
        raise ValueError(f"input is {len(text)} characters; the limit is {MAX_CHARS}")
    return text


def from_json(text: str) -> Prompt:
    return from_dict(json.loads(_bounded(text)))


def from_yaml(text: str) -> Prompt:
    try:
        import yaml  # optional dependency: newbie[yaml]
    except ImportError as e:
        raise ValueError("reading YAML needs PyYAML: pip install 'newbie[yaml]'") from e
    try:
        data = yaml.safe_load(_bounded(text))  # safe_load: plain data only, no Python objects
    except yaml.YAMLError as e:
        raise ValueError(f"invalid YAML: {' '.join(str(e).split())}") from e
    return from_dict(data)


def characters_from_count(tags: list[str]) -> list[Character]:
    """One character per person the count tags state (girls, then boys, then others); 6+ gives 6."""
    per: dict[str, int] = {}
    keys = [normalise(t) for t in tags]
    for m in filter(None, map(_COUNT.fullmatch, keys)):
        per[m.group(2)] = per.get(m.group(2), 0) + int(m.group(1))
    for gender in ("girl", "boy", "other"):
        if gender not in per and f"multiple_{gender}s" in keys:
            per[gender] = 2  # danbooru writes 2girls with multiple_girls; alone it means at least two
    out = [Character(gender=[f"1{g}"]) for g in ("girl", "boy", "other") for _ in range(per.get(g, 0))]
    if not out and "solo" in keys:
        out = [Character()]
    for i, ch in enumerate(out):
        ch.index = i + 1
    return out


def from_tags(tags: "str | list[str]") -> Prompt:
    """A flat danbooru list -> XML fields by tag category; unknown tags go to <other>.

    A flat list does not say which character has which attribute, so with several characters the
    character-level tags go to <general_tags><other> rather than being bound to one of them arbitrarily.
    """
    tags = split_tags(_bounded(tags) if isinstance(tags, str) else tags)
    lex = lexicon()
    general = GeneralTags()
    chars = characters_from_count(tags)
    char_tags = [t for t in tags if lex.field(t) in CHARACTER_FIELDS]
    if char_tags and not chars and not any(normalise(t) == "no_humans" for t in tags):
        chars = [Character(index=1)]
    for tag in tags:
        field = lex.field(tag)
        if field in CHARACTER_FIELDS:
            target = chars[0] if len(chars) == 1 else general
            field = field if len(chars) == 1 else "other"
        else:
            target = general
        if tag not in getattr(target, field):
            getattr(target, field).append(tag)
    return Prompt(kind="xml", characters=chars, general=general if general.all_tags() else None)

"""The tag lexicon: which category (and so which XML field) a danbooru tag belongs to.

Data lives in data/tag_categories.json. Lookup order: the explicit lists, then the generated
<colour>_<noun> tags (red_hair, blue_eyes, green_background, white_shirt, ...), then the prefix/suffix rules.
"""

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

_DATA = Path(__file__).parent / "data"


def normalise(tag: str) -> str:
    """Lookup key: lower case, underscores, no paren escapes ('Blue Hair' and 'blue_hair' are one tag)."""
    return "_".join(tag.replace("\\", "").lower().split())


@dataclass(frozen=True)
class Lexicon:
    category_of: dict[str, str]  # tag -> category (explicit and generated colour tags)
    field_of_category: dict[str, str]  # category -> XML field
    rules: tuple[tuple[str, str, str], ...]  # ("prefix" | "suffix", text, category), first match wins
    colors: tuple[str, ...]
    colored: dict[str, str]  # noun that takes a colour -> category of <colour>_<noun>

    def category(self, tag: str) -> str | None:
        key = normalise(tag)
        if key in self.category_of:
            return self.category_of[key]
        for kind, text, cat in self.rules:
            if key.startswith(text) if kind == "prefix" else key.endswith(text):
                return cat
        return None

    def field(self, tag: str) -> str:
        """The XML field a tag goes to; "other" when the lexicon does not know it."""
        cat = self.category(tag)
        return self.field_of_category[cat] if cat else "other"


@lru_cache(maxsize=1)
def lexicon() -> Lexicon:
    data = json.loads((_DATA / "tag_categories.json").read_text(encoding="utf-8"))
    category_of: dict[str, str] = {}
    for noun, cat in data["colored"].items():
        for colour in data["colors"]:
            category_of[f"{colour}_{noun}"] = cat
    for cat, entry in data["categories"].items():  # explicit lists override generated tags
        for tag in entry["tags"]:
            category_of[normalise(tag)] = cat
    rules = tuple(
        ("prefix", r["prefix"], r["category"]) if "prefix" in r else ("suffix", r["suffix"], r["category"])
        for r in data["rules"]
    )
    fields = {cat: entry["field"] for cat, entry in data["categories"].items()}
    return Lexicon(category_of, fields, rules, tuple(data["colors"]), dict(data["colored"]))

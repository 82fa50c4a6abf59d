"""The toy world's words: what the demo model's tokenizers know (issue 3 keeps these facts exact)."""

from __future__ import annotations

from newbie.config import TextConfig

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "blue": (40, 80, 220),
    "green": (40, 170, 60),
    "yellow": (240, 210, 40),
    "pink": (240, 130, 190),
    "purple": (140, 60, 200),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    # pastel blue/green, far from the palette's blue and green, so figures stand out on every background
    "white_background": (255, 255, 255),
    "black_background": (0, 0, 0),
    "blue_background": (150, 190, 250),
    "green_background": (150, 215, 150),
}
POSITIONS = ("left", "center", "right")
GENDERS = ("1girl", "1boy")
COUNTS = (
    "1girl",
    "2girls",
    "3girls",
    "1boy",
    "2boys",
    "3boys",
    "multiple_girls",
    "multiple_boys",
    "1girl_1boy",
    "solo",
    "1other",
    "2others",
    "3others",
)
XML_TAGS = (
    "character_1",
    "character_2",
    "character_3",
    "n",
    "gender",
    "appearance",
    "clothing",
    "position",
    "general_tags",
    "count",
    "background",
    "style",
    "quality",
    "expression",
    "action",
    "other",
    "caption",
)


def toy_words() -> list[str]:
    words: list[str] = []
    for c in PALETTE:
        words += [c, f"{c}_hair", f"{c}_eyes", f"{c}_shirt"]
    words += list(BACKGROUNDS) + list(POSITIONS) + list(GENDERS) + list(COUNTS) + list(XML_TAGS)
    words += [
        "$character_1$",
        "$character_2$",
        "$character_3$",
        "girl",
        "boy",
        "hair",
        "eyes",
        "shirt",
        "background",
        "standing",
        "smile",
        "simple_background",
        "anime_style",
        "high_resolution",
    ]
    cfg = TextConfig()
    for sp in (cfg.system_prompt_xml, cfg.system_prompt_text):
        words += sp.replace("<Prompt Start>", "prompt start").replace(".", " ").split()
    seen, out = set(), []
    for w in words:
        w = w.lower()
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out

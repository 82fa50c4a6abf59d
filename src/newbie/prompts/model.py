"""The typed form of a NewBie prompt: characters, general tags, caption.

Field names and their order follow the official README example; the extra fields (body_type, interaction,
artists, environment, perspective, lighting, resolution) come from the team's XML tooling
(spec/newbie-exp0.1.md section 5). Values are lists of danbooru tags; a string is split on commas so that
`Character(gender="1girl", appearance="blue_hair, long_hair")` works.
"""

from dataclasses import dataclass, field

CHARACTER_FIELDS = (
    "n",
    "gender",
    "appearance",
    "clothing",
    "expression",
    "action",
    "position",
    "body_type",
    "interaction",
)
GENERAL_FIELDS = (
    "count",
    "style",
    "background",
    "atmosphere",
    "quality",
    "objects",
    "other",
    "artists",
    "environment",
    "perspective",
    "lighting",
    "resolution",
)

Tags = list[str]


def split_tags(value: "str | list[str] | tuple[str, ...] | None") -> Tags:
    """Comma- or newline-separated text (or a list) -> stripped, non-empty tags, order kept."""
    if value is None:
        return []
    if isinstance(value, str):
        value = value.replace("\n", ",").split(",")
    return [t.strip() for t in value if str(t).strip()]


def _normalise(obj, names: tuple[str, ...]) -> None:
    for name in names:
        setattr(obj, name, split_tags(getattr(obj, name)))
    obj.extra = {k: split_tags(v) for k, v in obj.extra.items()}


@dataclass
class Character:
    n: Tags = field(default_factory=list)  # the name, or the $character_N$ placeholder
    gender: Tags = field(default_factory=list)
    appearance: Tags = field(default_factory=list)
    clothing: Tags = field(default_factory=list)
    expression: Tags = field(default_factory=list)
    action: Tags = field(default_factory=list)
    position: Tags = field(default_factory=list)
    body_type: Tags = field(default_factory=list)
    interaction: Tags = field(default_factory=list)
    extra: dict[str, Tags] = field(default_factory=dict)  # fields with unknown names, kept so nothing is lost
    index: int = 0  # N of <character_N> as written; 0 for characters built in Python (numbered by order)

    def __post_init__(self):
        _normalise(self, CHARACTER_FIELDS)

    def fields(self) -> list[tuple[str, Tags]]:
        """(name, tags) for every field, known ones in canonical order, then unknown ones."""
        return [(f, getattr(self, f)) for f in CHARACTER_FIELDS] + list(self.extra.items())

    def all_tags(self) -> Tags:
        return [t for _, tags in self.fields() for t in tags]


@dataclass
class GeneralTags:
    count: Tags = field(default_factory=list)
    style: Tags = field(default_factory=list)
    background: Tags = field(default_factory=list)
    atmosphere: Tags = field(default_factory=list)
    quality: Tags = field(default_factory=list)
    objects: Tags = field(default_factory=list)
    other: Tags = field(default_factory=list)
    artists: Tags = field(default_factory=list)
    environment: Tags = field(default_factory=list)
    perspective: Tags = field(default_factory=list)
    lighting: Tags = field(default_factory=list)
    resolution: Tags = field(default_factory=list)
    extra: dict[str, Tags] = field(default_factory=dict)

    def __post_init__(self):
        _normalise(self, GENERAL_FIELDS)

    def fields(self) -> list[tuple[str, Tags]]:
        return [(f, getattr(self, f)) for f in GENERAL_FIELDS] + list(self.extra.items())

    def all_tags(self) -> Tags:
        return [t for _, tags in self.fields() for t in tags]


@dataclass
class Block:
    """A top-level element whose name the model does not know (e.g. a typo), kept verbatim-ish."""

    name: str
    text: str = ""
    fields: dict[str, Tags] = field(default_factory=dict)


@dataclass
class Prompt:
    kind: str = "xml"  # "xml", "tags" (a danbooru tag list) or "text" (natural language)
    characters: list[Character] = field(default_factory=list)
    general: GeneralTags | None = None
    caption: str | None = None
    style: Tags = field(default_factory=list)  # a top-level <style> line, as some XML tooling writes
    tags: Tags = field(default_factory=list)  # kind "tags": the list itself
    unknown: list[Block] = field(default_factory=list)
    image_root: bool = False  # the XML was wrapped in <image>...</image>
    source: str = ""  # the text as given; empty for prompts built in Python
    # Where things were written, (line, column), 1-based. Keys: ("character", i[, field[, tag_i]]),
    # ("general"[, field[, tag_i]]), ("caption",), ("style"[, field, tag_i]), ("unknown", i[, field]),
    # ("tags", tag_i). i indexes the lists above, not the N of <character_N>. Empty for built prompts.
    positions: dict[tuple, tuple[int, int]] = field(default_factory=dict)

"""Style presets: named, visible sets of danbooru style tags the user can edit before they are applied."""

from __future__ import annotations

from newbie.prompts import parse, to_xml
from newbie.prompts.model import GeneralTags, split_tags

NO_STYLE = "none"
STYLE_PRESETS: dict[str, str] = {
    "anime default": "anime_style, digital_art, high_resolution, detailed",
    "oil painting": "oil_painting_\\(medium\\), traditional_media, painterly, impasto",
    "watercolour": "watercolor_\\(medium\\), traditional_media, soft_colors, paper_texture",
    "cyberpunk": "cyberpunk, neon_lights, science_fiction, glowing, night",
    "ink wash": "ink_wash_painting, monochrome, traditional_media, sumi-e",
    NO_STYLE: "",
}


def preset_tags(name: str) -> str:
    return STYLE_PRESETS.get(name, "")


def apply_style(prompt: str, style_tags: str) -> str:
    """The prompt with the style tags added: into <general_tags><style> for XML, else appended.

    An XML prompt is re-rendered (to_xml), so the result is the canonical form; malformed XML raises
    PromptError, which the page has already shown next to the prompt.
    """
    tags = split_tags(style_tags)
    if not tags:
        return prompt
    parsed = parse(prompt)
    if parsed.kind == "xml":
        general = parsed.general or GeneralTags()
        general.style += [t for t in tags if t not in general.style]
        parsed.general = general
        return to_xml(parsed)
    text = prompt.rstrip().rstrip(",").rstrip()
    return f"{text}, {', '.join(tags)}" if text else ", ".join(tags)

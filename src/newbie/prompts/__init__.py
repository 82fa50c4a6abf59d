"""Structured (XML) prompts for NewBie image Exp0.1: parse, lint, canonical form, builders, expansion.

Pure Python: nothing here imports torch, transformers or numpy, so the CLI and web UI can check a prompt
in milliseconds. By default the engine sends the user's text to the encoder verbatim; this package only
reads it (parse, lint) or produces new text on request (canonical, build, expand).
"""

from .build import from_dict, from_json, from_tags, from_yaml
from .expand import expand
from .lint import CODES, LintWarning, lint
from .model import CHARACTER_FIELDS, GENERAL_FIELDS, Block, Character, GeneralTags, Prompt
from .parse import check_xml, parse, prompt_kind
from .render import canonical, to_xml
from .xml_parser import MAX_CHARS, PromptError

__all__ = [
    "CHARACTER_FIELDS",
    "CODES",
    "GENERAL_FIELDS",
    "MAX_CHARS",
    "Block",
    "Character",
    "GeneralTags",
    "LintWarning",
    "Prompt",
    "PromptError",
    "canonical",
    "check_xml",
    "expand",
    "from_dict",
    "from_json",
    "from_tags",
    "from_yaml",
    "lint",
    "parse",
    "prompt_kind",
    "to_xml",
]

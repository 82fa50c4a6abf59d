"""Whether a prompt is an XML structured prompt: below both the text encoders (model/text.py picks the system
prompt by it) and the prompt package (newbie.prompts parses by it), so neither imports the other."""

import re

# An XML prompt starts with a tag (optionally after a BOM and whitespace). Declarations and processing
# instructions count too, so that `<?xml ...?>` gets the parser's error instead of silently going to the
# encoder as text. `<lora:x:1>` and `<3` do not match; `<character_1 id="2">` does (and gets an error).
_XML_START = re.compile(r"\ufeff?\s*<(?:[A-Za-z_][A-Za-z0-9_.\-]*(?:[\s/>]|$)|[!?])")


def prompt_kind(text: str) -> str:
    """ "xml" if the text is (meant to be) an XML structured prompt, else "text". Cheap; never raises."""
    try:
        return "xml" if _XML_START.match(text[:4096]) else "text"
    except Exception:
        return "text"

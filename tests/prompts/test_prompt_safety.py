import subprocess
import sys
import time
from pathlib import Path

import pytest

from newbie.prompts import MAX_CHARS, PromptError, parse

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<caption>&lol9;</caption>"""


def _rejected_fast(text: str) -> PromptError:
    start = time.perf_counter()
    with pytest.raises(PromptError) as info:
        parse(text)
    assert time.perf_counter() - start < 0.05
    return info.value


def test_billion_laughs_is_rejected_in_milliseconds():
    _rejected_fast(BILLION_LAUGHS)
    err = _rejected_fast(BILLION_LAUGHS.split("\n", 1)[1])  # without the <?xml?> line
    assert "DOCTYPE" in err.message and (err.line, err.column) == (1, 1)


def test_entity_reference_without_a_dtd_is_rejected():
    err = _rejected_fast("<caption>&lol9;</caption>")
    assert "unknown entity &lol9;" in err.message


def test_external_entity_is_rejected():
    err = _rejected_fast('<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><caption>&e;</caption>')
    assert "DOCTYPE" in err.message


def test_deep_nesting_is_rejected_at_the_third_level():
    err = _rejected_fast("<a>" * 20000)
    assert (err.line, err.column) == (1, 7) and "nests too deep" in err.message


def test_oversized_input_is_rejected_before_parsing():
    err = _rejected_fast("<caption>" + "x" * MAX_CHARS + "</caption>")
    assert "limit is 65536" in err.message
    _rejected_fast("<a>" * 1_000_000)


def test_numeric_references_are_bounded():
    assert parse("<caption>&#65;&#x42;</caption>").caption == "AB"
    _rejected_fast("<caption>&#0;</caption>")
    _rejected_fast("<caption>&#x110000;</caption>")


def test_package_imports_no_torch_transformers_or_numpy():
    src = Path(__file__).resolve().parents[2] / "src"
    code = (
        f"import sys; sys.path.insert(0, {str(src)!r}); import newbie.prompts, newbie.cli.prompts;"
        "bad = [m for m in ('torch', 'transformers', 'numpy', 'tokenizers') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

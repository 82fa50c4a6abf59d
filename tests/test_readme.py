"""The README's Python snippets run as written, on the embedded demo model, each in a fresh interpreter."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNIPPETS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_the_readme_has_its_snippets():
    assert len(SNIPPETS) == 2  # the native API and the diffusers-style one


@pytest.mark.parametrize("code", SNIPPETS, ids=["native", "diffusers"])
def test_a_readme_snippet_runs_as_written(code, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # nothing but what the snippet prints
    written = sorted(p.name for p in tmp_path.glob("*.png"))
    assert written == [re.search(r'\.save\("([^"]+)"\)', code).group(1)]

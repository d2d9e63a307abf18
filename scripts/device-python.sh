#!/usr/bin/env bash
# Python on a lent GPU machine: its own python3 (with its CUDA torch), the repository importable, and
# the wheels carried in .whl/ (scripts/device-wheels.sh) that its own packages do not satisfy
# installed into /tmp/site (bench/carry.py chooses them: KServe and what it needs, transformers 5.24).
#   scripts/device-python.sh -m bench --device cuda
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# What the image holds of the packages KServe 0.21 pins tightly (protobuf >=6.33.5,<7, psutil <6,
# pandas <3, grpcio) and of transformers' stack, before anything is installed or imported.
python3 -m pip show protobuf grpcio psutil pandas transformers tokenizers safetensors huggingface-hub 2>&1 \
  | grep -E '^(Name|Version):|not found' >&2 || true
if ls .whl/*.whl >/dev/null 2>&1; then
  site=${DEVICE_SITE:-/tmp/site}  # where they go (a test gives its own)
  python3 -m bench.carry install .whl "$site" >&2
  export PYTHONPATH="$PYTHONPATH:$site"
elif ! python3 -c "import kserve" 2>/dev/null; then
  echo "KServe is not installed and there are no wheels in .whl/: run 'make device-wheels' where pip" >&2
  echo "works, and carry .whl with the command." >&2
  exit 1
fi
exec python3 "$@"

#!/usr/bin/env bash
# Wheels for a lent GPU machine (see /work/.library/device): it has no network, and its python3 (3.12)
# holds CUDA torch, an older transformers (5.17) and many common packages, but not KServe. This
# downloads the predictor's stack for that Python at the versions locks/image-cuda.txt pins (KServe
# 0.21 and its dependencies, transformers 5.24), then keeps what bench/carry.py says the image lacks
# or holds at a version outside the requirements (tests/fixtures/device-image.txt: what it holds),
# into .whl/ (ignored by git; about 60 MiB), to carry with the device tool (`carry: [".whl"]`).
# There, scripts/device-python.sh installs the ones the image's own versions do not satisfy.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PYTHON_VERSION=${PYTHON_VERSION:-3.12}  # the device image's python3
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
  manylinux2014_x86_64 manylinux_2_12_x86_64 manylinux2010_x86_64 manylinux_2_5_x86_64 manylinux1_x86_64 any; do
  platforms+=(--platform "$tag")
done
rm -rf .whl && mkdir -p .whl/all
# The lock's versions (not torch's CUDA stack: the image's stays), so that what is carried is what
# tests/unit/test_device_carry.py checked against the image.
sed -n 's/^\([A-Za-z0-9._-]*==[^ ]*\).*/\1/p' locks/image-cuda.txt | grep -Ev '^(torch|triton|nvidia-|cuda-)' \
  > .whl/all/constraints.txt
"$PY" -m pip download --quiet --disable-pip-version-check --only-binary=:all: --python-version "$PYTHON_VERSION" \
  --implementation cp "${platforms[@]}" -c .whl/all/constraints.txt -d .whl/all \
  "kserve==0.21.0" "transformers==5.24.0" "fastapi>=0.165,<1" "pydantic>=2.7,<3" "accelerate>=1.0,<2"
"$PY" -m bench.carry prune .whl/all .whl --image tests/fixtures/device-image.txt
rm -rf .whl/all
echo "$(ls .whl | wc -l) wheels, $(du -sh .whl | cut -f1), in .whl/ (the device tool carries 64 MiB with the working tree)"

#!/usr/bin/env bash
# Wheels for a lent GPU machine (see /work/.library/device): it has no network, and its python3 (3.12)
# holds CUDA torch, transformers, accelerate and many common packages, but not KServe. This downloads
# what the predictor needs and that image lacks into .whl/ (ignored by git; about 21 MB), to carry
# with the device tool (`carry: [".whl"]`). There, `make bench DEVICE=cuda` installs them and runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PYTHON_VERSION=${PYTHON_VERSION:-3.12}  # the device image's python3
# The device image's packages ("Python packages already there", KINDS.md): not carried.
PRESENT=" absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs certifi
 charset-normalizer click filelock frozenlist fsspec grpcio h11 httpcore httpx huggingface-hub idna jinja2
 markupsafe multidict numpy packaging pandas pillow pip prometheus-client propcache protobuf psutil
 python-dateutil pyyaml regex requests rich safetensors setuptools six tabulate tokenizers torch tqdm
 transformers typing-extensions urllib3 uvloop wheel yarl "
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 any; do
  platforms+=(--platform "$tag")
done
rm -rf .whl && mkdir -p .whl/all
"$PY" -m pip download --quiet --disable-pip-version-check --only-binary=:all: --python-version "$PYTHON_VERSION" \
  --implementation cp "${platforms[@]}" -d .whl/all "kserve>=0.21,<0.22" "fastapi>=0.165,<1" "pydantic>=2.7,<3"
for wheel in .whl/all/*.whl; do
  name=$(basename "$wheel" | sed 's/-[0-9].*//' | tr 'A-Z_' 'a-z-')
  case "$PRESENT" in *" $name "*) ;; *) mv "$wheel" .whl/ ;; esac
done
rm -rf .whl/all
echo "$(ls .whl | wc -l) wheels, $(du -sh .whl | cut -f1), in .whl/"

#!/usr/bin/env bash
# The whole device call of issue 19, prepared so that nothing it measures is lost: tests/gpu, then the
# benchmark's GPU plan (bench/__main__.py: each phase has its own time limit and the JSON is rewritten
# after every one), every output teed into $OUT as it is written, which the device tool brings back
# even from a call killed at its limit. On the lent machine, after `make device-wheels` here:
#   device run: command "scripts/device-check.sh", carry [".whl"], timeout_s 540
# DEVICE=cpu runs the same script here on tiny shapes: the dry run (tests/integration/test_device_check.py).
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
export PYTHONUNBUFFERED=1 OUT=${OUT:-$PWD/bench/out/device-check}
mkdir -p "$OUT"
if [ "$DEVICE" = cpu ]; then  # the GPU plan's code on the smallest shapes, in well under a minute
  BENCH_ARGS=${BENCH_ARGS:---shape tiny --prompt-tokens 8 --new-tokens 4 --concurrency 1 2 --requests 2}
  ATTENTION_ARGS=${ATTENTION_ARGS:---shape tiny --steps 1 --rounds 1}
fi
status=0
echo "== tests/gpu"
timeout "${TESTS_TIMEOUT:-150}" scripts/device-python.sh -m pytest -q -p no:cacheprovider tests/gpu 2>&1 \
  | tee "$OUT/tests-gpu.txt" || status=1
echo "== attention"  # the static step's kernels side by side (bench/attention.py): varlen against full_span
# shellcheck disable=SC2086 # ATTENTION_ARGS is a list of flags
timeout "${ATTENTION_TIMEOUT:-150}" scripts/device-python.sh -m bench.attention --device "$DEVICE" --out "$OUT" \
  --models "${BENCH_OUT:-/tmp/bench}/models" ${ATTENTION_ARGS:-} 2>&1 | tee "$OUT/attention.txt" || status=1
echo "== bench"
# shellcheck disable=SC2086 # BENCH_ARGS is a list of flags
scripts/device-python.sh -m bench --device "$DEVICE" --plan gpu --out "${BENCH_OUT:-/tmp/bench}" --results "$OUT" \
  ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.txt" || status=1
echo "== done (status $status); in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit $status

#!/usr/bin/env bash
# Device check for pallas_kernels (GPU or TPU), < 6 minutes on one H200-class GPU:
#   1. correctness: the non-interpreted kernel tests (test_device_numerics, f32 + bf16, windows, GQA,
#      padding; forward and dq/dk/dv under the 2x-naive rule) plus the dispatcher tests;
#   2. the benchmark grid (B in {8,32}, T in {256,1024,4096}, H=4, D in {64,128}, window in {None,128}),
#      JSON lines to $OUT/kernels_bench.jsonl (or ./kernels_bench.jsonl).
# Written without access to a GPU (none was lent to the authoring session): untested on hardware.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
OUT_DIR=${OUT:-.}
mkdir -p "$OUT_DIR"
$PY -c "import jax; print('backend', jax.default_backend(), jax.devices())"
status=0
timeout 150 $PY -m pytest -q -x -m gpu tests/pallas_kernels/test_kernels_pallas.py 2>&1 | tee "$OUT_DIR/kernels_device_tests.txt" || status=1
timeout 200 $PY experiments/bench/kernels.py --reps 5 2>&1 | tee "$OUT_DIR/kernels_bench.jsonl" || status=1
exit $status

#!/usr/bin/env bash
# One device call, at most 9 minutes (issue 9): the GPU tests (FlashAttention rule against a float64 reference, at the
# timed shapes too, with the configs autotuning picks), then the benchmark. Results under $OUT (default
# benchmarks/out): nvidia-smi.txt, pytest_gpu.log, bench.log, bench_exact.{json,md,png}.
#   OUT=$OUT bash benchmarks/gpu_check.sh
# The device image has torch, triton, hypothesis, mpmath, numpy, pytest but no z3 or python-flint: nothing here
# imports them. Each stage has its own timeout so a hang in one still leaves the other's results.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=. TRITON_DEFAULT_FP_FUSION=1
{ nvidia-smi; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } \
  > "$OUT/nvidia-smi.txt" 2>&1
start=$(date +%s)
timeout 300 python3 -m pytest -m gpu tests/test_kernels.py tests/test_interface.py -q -p no:cacheprovider \
  -p no:verified_ta --timeout=290 2>&1 | tee "$OUT/pytest_gpu.log"
tests_rc=${PIPESTATUS[0]}
left=$(( 530 - ($(date +%s) - start) ))
timeout "$left" python3 benchmarks/bench_exact.py --out "$OUT" 2>&1 | tee "$OUT/bench.log"
bench_rc=${PIPESTATUS[0]}
echo "gpu_check: tests rc=$tests_rc, benchmark rc=$bench_rc, $(( $(date +%s) - start )) s"
exit $(( tests_rc != 0 || bench_rc != 0 ))

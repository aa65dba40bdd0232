#!/usr/bin/env bash
# The CPU figures the issues ask for, written to benchmarks/results/cpu-<date>-2e24.{json,md} and
# cpu-<date>-quick.{json,md}:
#   * every activation forward and backward at 2^24 float32 (softmax/log-softmax as 4096 x 4096),
#   * every loss with its gradient at 2^24 (cross-entropy and multi-margin as 4096 x 4096),
#   * Adam, SGD with momentum and RMSprop over 2^24 parameters (one tensor and 200 tensors),
# against naive NumPy and PyTorch CPU (torch.optim with fused=True where it exists), then the quick sweep of
# everything. THREADS (default 1) sets gpunn's (Numba) and PyTorch's thread count alike: NumPy's ufuncs are
# single-threaded, and on a shared machine one thread per library keeps the comparison from measuring scheduling.
set -eu -o pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
THREADS=${THREADS:-1}
STAMP=$(date -u +%Y%m%d)
OUTDIR=benchmarks/results
if [ "${1:-}" = "--dry-run" ]; then PY="echo $PY"; fi
$PY -m gpunn bench --backend cpu --threads "$THREADS" --sizes 2^24 --no-plot --output "$OUTDIR" \
    --stem "cpu-$STAMP-2e24" --ops "activations,losses,adam,sgd_momentum,rmsprop"
$PY -m gpunn bench --backend cpu --threads "$THREADS" --no-plot --output "$OUTDIR" --stem "cpu-$STAMP-quick"

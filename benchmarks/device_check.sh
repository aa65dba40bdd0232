#!/usr/bin/env bash
# The one prepared check for a lent GPU (about 8 minutes on an H100). No network, no installs: the machine's image
# has numba, numba-cuda, CuPy, PyTorch and pytest. Run from anywhere inside the repository:
#
#   bash benchmarks/device_check.sh             # on the GPU machine
#   bash benchmarks/device_check.sh --dry-run   # print every step, run nothing (checks the script's own logic)
#   bash benchmarks/device_check.sh --cpu-smoke # the same steps on the CPU with tiny sizes (no GPU needed)
#
# Steps: nvidia-smi -L; gpunn info; the test suite on the real GPU (python -m pytest -q -x, time-limited); then the
# benchmark: every activation at 2^26 vs PyTorch CUDA, CuPy and a device-to-device copy; cross-entropy with gradient
# at 8192x32768 and 4096x131072 vs F.cross_entropy fwd+bwd; one Adam step over 100M parameters in 200 tensors of
# mixed sizes vs torch.optim.Adam(fused=True); the launch-overhead line (200 tiny tensors); the quick sweep of every
# op if time is left. Results: benchmarks/results/<card>-<date>/ (JSON, Markdown, PNG, logs, summary.md), archived
# to $OUT when it is set. Each step has its own time limit; a step that fails or runs out is reported and the next
# one still runs. Exit status: 0 only if the tests and every benchmark step passed.
#
# Time limits (seconds, override from the environment; 0 skips a step): TEST_LIMIT=180, ACT_LIMIT=130, CE_LIMIT=50,
# ADAM_LIMIT=40, LAUNCH_LIMIT=40, QUICK_LIMIT=30: at most 490 s of steps, about 8 minutes with the start-up.
# (--cpu-smoke gives every bench step 120 s by default: CPU compiles are slow.)
set -u -o pipefail

DRY=0
SMOKE=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY=1 ;;
        --cpu-smoke) SMOKE=1 ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "device_check.sh: unknown argument '$arg' (use --dry-run, --cpu-smoke or --help)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python}
export PYTHONUNBUFFERED=1  # output reaches the logs line by line, even from a step its time limit kills

TEST_LIMIT=${TEST_LIMIT:-180}
ACT_LIMIT=${ACT_LIMIT:-130}
CE_LIMIT=${CE_LIMIT:-50}
ADAM_LIMIT=${ADAM_LIMIT:-40}
LAUNCH_LIMIT=${LAUNCH_LIMIT:-40}
QUICK_LIMIT=${QUICK_LIMIT:-30}

if [ "$SMOKE" = 1 ]; then
    # The same steps, tiny, on the CPU: exercises this script's plumbing where there is no GPU.
    ACT_LIMIT=${ACT_LIMIT_SMOKE:-120}; CE_LIMIT=${CE_LIMIT_SMOKE:-120}; ADAM_LIMIT=${ADAM_LIMIT_SMOKE:-120}
    LAUNCH_LIMIT=${LAUNCH_LIMIT_SMOKE:-120}; QUICK_LIMIT=${QUICK_LIMIT_SMOKE:-120}
    BACKEND=cpu
    ACT_OPS="relu,softmax"; ACT_SIZES="2^10"; CE_SIZES="64x128,32x512"; ADAM_SIZES="2^12"; QUICK_OPS="relu"
    TEST_CMD=("$PY" -m pytest -q -x tests/test_bench.py -k "parse_size or bytes_hand")
    EXTRA=(--repeats 3 --max-sets 2)
    CARD=cpu-smoke
    RESULTS_ROOT=${RESULTS_ROOT:-${TMPDIR:-/tmp}/gpunn-device-check}  # keep smoke output out of the repository
else
    BACKEND=cuda
    ACT_OPS="activations"; ACT_SIZES="2^26"; CE_SIZES="8192x32768,4096x131072"; ADAM_SIZES="1e8"; QUICK_OPS=""
    TEST_CMD=("$PY" -m pytest -q -x -p no:cacheprovider)
    EXTRA=()
    CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
    CARD=$(printf '%s' "${CARD:-unknown-gpu}" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/^-*//; s/-*$//')
fi
STAMP=$(date -u +%Y%m%d-%H%M)
RESULTS=${RESULTS_ROOT:-benchmarks/results}/${CARD}-${STAMP}
FAILED=()

run_step() {  # run_step NAME LIMIT CMD...: print, time-limit, log to $RESULTS/NAME.log, remember failures
    local name=$1 limit=$2
    shift 2
    echo
    echo "=== $name (limit ${limit}s): $*"
    if [ "$DRY" = 1 ]; then
        return 0
    fi
    if [ "$limit" = 0 ]; then
        echo "    skipped (limit 0)"
        return 0
    fi
    local start=$SECONDS rc
    timeout --signal=TERM --kill-after=10 "$limit" "$@" 2>&1 | tee "$RESULTS/$name.log"
    rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc after $((SECONDS - start))s"
    if [ "$rc" != 0 ]; then
        [ "$rc" = 124 ] && echo "    ($name ran out of its ${limit}s)"
        FAILED+=("$name (exit $rc)")
    fi
}

bench() {  # bench NAME LIMIT ARGS...: one gpunn bench run writing NAME.json/.md/-plots under $RESULTS
    local name=$1 limit=$2
    shift 2
    run_step "bench-$name" "$limit" "$PY" -m gpunn bench --backend "$BACKEND" --output "$RESULTS" --stem "$name" \
        "${EXTRA[@]}" "$@"
}

echo "gpunn device check: results in $RESULTS (dry run: $DRY, cpu smoke: $SMOKE)"
[ "$DRY" = 1 ] || mkdir -p "$RESULTS"

if [ "$SMOKE" = 1 ]; then
    echo "nvidia-smi -L: skipped (cpu smoke)"
else
    run_step nvidia-smi 30 nvidia-smi -L
fi
run_step info 120 "$PY" -m gpunn info
[ "$DRY" = 1 ] || git log -1 --format='commit %H %cI %s' 2>/dev/null || echo "commit: unknown (no git here)"
run_step tests "$TEST_LIMIT" "${TEST_CMD[@]}"

# activations (forward and backward, softmax and log-softmax included) at 2^26 float32
bench activations "$ACT_LIMIT" --ops "$ACT_OPS" --sizes "$ACT_SIZES"
# cross-entropy with gradient vs F.cross_entropy forward + backward
bench cross_entropy "$CE_LIMIT" --ops cross_entropy --sizes "$CE_SIZES"
# one Adam step over 100M parameters in 200 tensors of mixed sizes vs torch.optim.Adam(fused=True)
bench adam_100m "$ADAM_LIMIT" --ops adam.x200 --sizes "$ADAM_SIZES"
# launch overhead: microseconds per Adam step over 200 tiny tensors (200 x 64 elements)
bench launch "$LAUNCH_LIMIT" --ops launch --no-plot
# the quick sweep of everything, if time is left (each entry is saved as it finishes)
if [ -n "$QUICK_OPS" ]; then
    bench quick "$QUICK_LIMIT" --ops "$QUICK_OPS"
else
    bench quick "$QUICK_LIMIT"
fi

if [ "$DRY" = 0 ]; then
    "$PY" -m gpunn bench --summarize "$RESULTS" | tee "$RESULTS/summary.md"
    if [ ${#FAILED[@]} -gt 0 ]; then
        printf 'FAILED: %s\n' "${FAILED[@]}" | tee -a "$RESULTS/summary.md"
    fi
    if [ -n "${OUT:-}" ]; then
        # the device tool brings back at most 8 files from $OUT: one archive of everything, plus the summary to read
        mkdir -p "$OUT" && tar -czf "$OUT/$(basename "$RESULTS").tar.gz" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")" \
            && cp "$RESULTS/summary.md" "$OUT/" && echo "archived $RESULTS to $OUT/"
    fi
fi
echo
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "device check: ${#FAILED[@]} step(s) failed: ${FAILED[*]}"
    exit 1
fi
echo "device check: every step passed"

#!/usr/bin/env bash
# The one prepared check for a lent GPU, sized to fit one device command (600 s at most) with room to spare.
# No network, no installs: the machine's image has numba, numba-cuda, CuPy, PyTorch and pytest. Run from anywhere
# inside the repository:
#
#   bash benchmarks/device_check.sh             # on the GPU machine
#   bash benchmarks/device_check.sh --dry-run   # print every step and the time budget, run nothing
#   bash benchmarks/device_check.sh --cpu-smoke # the same steps on the CPU with tiny sizes (no GPU needed)
#
# Steps, benchmarks first (they are what only the GPU can show); limits in seconds, override from the environment
# (0 skips a step):
#   info           INFO_LIMIT=20    gpunn info (versions, the device)
#   activations    ACT_LIMIT=90     every activation, forward and backward, at 2^26 float32 vs PyTorch
#   cross_entropy  CE_LIMIT=40      cross-entropy with gradient at 8192x32768 and 4096x131072 vs F.cross_entropy
#   adam_100m      ADAM_LIMIT=35    one Adam step over 100M parameters in 200 tensors vs torch.optim.Adam(fused=True)
#   launch         LAUNCH_LIMIT=15  microseconds per Adam step over 200 tiny tensors
#   tests          TEST_LIMIT=120   the device tests of one module per family and the gpu-marked tests (no -x)
# After every step, summary.md (each step's outcome, the headline figures and the goals so far) and a tar.gz of
# the results directory are refreshed in $OUT when it is set, so a run killed part-way still returns what finished.
# Each summary of the figures has SUMMARY_LIMIT=8 (after the four benchmark steps). The budget printed first adds
# START_ALLOWANCE=60 for the machine's start-up and the card query; it must stay within 420 s.
# Results: benchmarks/results/<card>-<date>/. Exit status: 0 only if every step passed (a goal missed is a
# figure, not a failure: see the goal lines at the end).
set -u -o pipefail

DRY=0
SMOKE=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY=1 ;;
        --cpu-smoke) SMOKE=1 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "device_check.sh: unknown argument '$arg' (use --dry-run, --cpu-smoke or --help)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1  # output reaches the logs line by line, even from a step its time limit kills

START_ALLOWANCE=${START_ALLOWANCE:-60}
INFO_LIMIT=${INFO_LIMIT:-20}
SUMMARY_LIMIT=${SUMMARY_LIMIT:-8}
if [ "$SMOKE" = 1 ]; then  # tiny sizes, but every CPU loop compiles on a small machine: 45 s per benchmark step
    ACT_LIMIT=${ACT_LIMIT:-45}; CE_LIMIT=${CE_LIMIT:-45}; ADAM_LIMIT=${ADAM_LIMIT:-45}; LAUNCH_LIMIT=${LAUNCH_LIMIT:-45}
    TEST_LIMIT=${TEST_LIMIT:-60}
else
    ACT_LIMIT=${ACT_LIMIT:-90}; CE_LIMIT=${CE_LIMIT:-40}; ADAM_LIMIT=${ADAM_LIMIT:-35}; LAUNCH_LIMIT=${LAUNCH_LIMIT:-15}
    TEST_LIMIT=${TEST_LIMIT:-120}
fi
TEST_FILES=(tests/test_activations.py tests/test_losses_pointwise.py tests/test_cross_entropy.py
            tests/test_softmax.py tests/test_optim.py tests/test_bench.py)

if [ "$SMOKE" = 1 ]; then
    # The same steps, tiny, on the CPU: exercises this script's plumbing where there is no GPU.
    BACKEND=cpu
    ACT=(--ops relu,softmax --sizes 2^10); CE=(--sizes 64x128,32x512); ADAM=(--sizes 2^12)
    EXTRA=(--repeats 3 --max-sets 2)
    TEST_CMD=("$PY" -m pytest -q -p no:cacheprovider tests/test_bench.py -k "parse_size or bytes_hand")
    CARD=cpu-smoke
    RESULTS_ROOT=${RESULTS_ROOT:-${TMPDIR:-/tmp}/gpunn-device-check}  # keep smoke output out of the repository
else
    BACKEND=cuda
    ACT=(--ops activations --sizes 2^26); CE=(--sizes 8192x32768,4096x131072); ADAM=(--sizes 1e8)
    EXTRA=()
    TEST_CMD=("$PY" -m pytest -q -p no:cacheprovider -k "device or gpu" "${TEST_FILES[@]}")
    CARD=$(timeout 10 nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
    CARD=$(printf '%s' "${CARD:-unknown-gpu}" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/^-*//; s/-*$//')
fi
NAME=${CARD}-$(date -u +%Y%m%d-%H%M)
RESULTS=${RESULTS_ROOT:-benchmarks/results}/$NAME
BENCH_STEPS=4
BUDGET=$((START_ALLOWANCE + INFO_LIMIT + ACT_LIMIT + CE_LIMIT + ADAM_LIMIT + LAUNCH_LIMIT + TEST_LIMIT
          + BENCH_STEPS * SUMMARY_LIMIT))
FAILED=()

refresh() {  # refresh [figures]: rewrite summary.md (with "figures": summarise the benchmark JSON again), archive
    if [ "${1:-}" = figures ] && [ "$SUMMARY_LIMIT" != 0 ]; then
        timeout --kill-after=2 "$SUMMARY_LIMIT" "$PY" -m gpunn bench --summarize "$RESULTS" >"$RESULTS/figures.md" 2>&1 \
            || echo "(the summary of the figures failed or ran out of its ${SUMMARY_LIMIT}s)" >>"$RESULTS/figures.md"
    fi
    { cat "$RESULTS/steps.md"; echo; cat "$RESULTS/figures.md"; } >"$RESULTS/summary.md" 2>/dev/null
    if [ -n "${OUT:-}" ]; then
        # the device tool brings back at most 8 files from $OUT: one archive of everything, plus the summary to read
        mkdir -p "$OUT" && tar -czf "$OUT/$NAME.tar.gz.part" -C "$(dirname "$RESULTS")" "$NAME" \
            && mv "$OUT/$NAME.tar.gz.part" "$OUT/$NAME.tar.gz" && cp "$RESULTS/summary.md" "$OUT/"
    fi
}

show() {  # the words of a command as one line a shell reads back (a word with spaces in single quotes)
    local word words=()
    for word in "$@"; do
        case "$word" in *[[:space:]]*) words+=("'$word'") ;; *) words+=("$word") ;; esac
    done
    echo "${words[*]}"
}

run_step() {  # run_step NAME LIMIT CMD...: print, time-limit, log to $RESULTS/NAME.log, note the outcome
    local name=$1 limit=$2
    shift 2
    echo
    echo "=== $name (limit ${limit}s): $(show "$@")"
    if [ "$DRY" = 1 ]; then
        return 0
    fi
    if [ "$limit" = 0 ]; then
        echo "    skipped (limit 0)"
        echo "- $name: skipped" >>"$RESULTS/steps.md"
        return 0
    fi
    local start=$SECONDS rc
    timeout --signal=TERM --kill-after=5 "$limit" "$@" 2>&1 | tee "$RESULTS/$name.log"
    rc=${PIPESTATUS[0]}
    local outcome="exit $rc after $((SECONDS - start))s"
    [ "$rc" = 124 ] && outcome="$outcome (ran out of its ${limit}s)"
    echo "=== $name: $outcome"
    echo "- $name: $outcome" >>"$RESULTS/steps.md"
    [ "$rc" = 0 ] || FAILED+=("$name: $outcome")
}

bench() {  # bench NAME LIMIT ARGS...: one gpunn bench run writing NAME.json/.md under $RESULTS, then a refresh
    local name=$1 limit=$2
    shift 2
    run_step "bench-$name" "$limit" "$PY" -m gpunn bench --backend "$BACKEND" --providers gpunn,torch --no-plot \
        --output "$RESULTS" --stem "$name" "${EXTRA[@]}" "$@"
    [ "$DRY" = 1 ] || refresh figures
}

echo "gpunn device check: results in $RESULTS (dry run: $DRY, cpu smoke: $SMOKE)"
echo "budget: ${BUDGET}s = start-up ${START_ALLOWANCE}s + step limits + ${BENCH_STEPS} x ${SUMMARY_LIMIT}s summaries (at most 420s)"
if [ "$BUDGET" -gt 420 ]; then
    echo "device_check.sh: the limits add up to ${BUDGET}s, over the 420s a device command can spare" >&2
    exit 2
fi
if [ "$DRY" = 0 ]; then
    mkdir -p "$RESULTS" || exit 2
    {
        echo "# gpunn device check: $CARD, $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo
        git log -1 --format='commit %H %cI %s' 2>/dev/null || echo "commit: unknown (no git here)"
        echo
        echo "## Steps"
        echo
    } >"$RESULTS/steps.md"
    : >"$RESULTS/figures.md"
fi

run_step info "$INFO_LIMIT" "$PY" -m gpunn info
[ "$DRY" = 1 ] || refresh
bench activations "$ACT_LIMIT" "${ACT[@]}"
bench cross_entropy "$CE_LIMIT" --ops cross_entropy "${CE[@]}"
bench adam_100m "$ADAM_LIMIT" --ops adam.x200 "${ADAM[@]}"
bench launch "$LAUNCH_LIMIT" --ops launch
run_step tests "$TEST_LIMIT" "${TEST_CMD[@]}"

if [ "$DRY" = 1 ]; then
    exit 0
fi
if [ ${#FAILED[@]} -gt 0 ]; then
    printf -- '- FAILED: %s\n' "${FAILED[@]}" >>"$RESULTS/steps.md"
fi
refresh
echo
cat "$RESULTS/summary.md"
[ -n "${OUT:-}" ] && echo "archived $RESULTS to $OUT/$NAME.tar.gz"
echo
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "device check: ${#FAILED[@]} step(s) failed: ${FAILED[*]}"
    exit 1
fi
echo "device check: every step passed"

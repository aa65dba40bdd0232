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
#   softmax        SOFTMAX_LIMIT=25 softmax and log-softmax, forward and backward, at 2^26 float32 vs PyTorch
#   cross_entropy  CE_LIMIT=35      cross-entropy with gradient at 8192x32768 and 4096x131072 vs F.cross_entropy
#   adam_100m      ADAM_LIMIT=35    one Adam step over 100M parameters in 200 tensors vs torch.optim.Adam(fused=True)
#   activations    ACT_LIMIT=90     the elementwise activations, forward and backward, at 2^26 float32 vs PyTorch
#                                   (each JITs a vectorised kernel first: the last ones may be cut, the rest kept)
#   launch         LAUNCH_LIMIT=20  microseconds per Adam step over 200 tiny tensors (JITs the Adam step again)
#   tests          TEST_LIMIT=120   a fast GPU subset of one test module per family, and the gpu-marked tests
# (--cpu-smoke: 120 s per step and 30 s per summary, since every CPU loop compiles first on a small, shared machine;
# it runs no device command, so the 420 s budget does not apply to it.)
# After every step, summary.md (each step's outcome, the headline figures and the goals so far) and a tar.gz of
# the results directory are refreshed in $OUT when it is set, so a run killed part-way still returns what finished.
# Each summary of the figures has SUMMARY_LIMIT=6 (after each of the five benchmark steps). The budget printed
# first adds START_ALLOWANCE=60 for the machine's start-up and the card query; it must stay within 420 s (a run
# over it is refused).
# Results: benchmarks/results/<card>-<date>/. Exit status: 0 only if every step passed (a goal missed is a
# figure, not a failure: see the goal lines at the end).
set -u -o pipefail

DRY=0
SMOKE=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY=1 ;;
        --cpu-smoke) SMOKE=1 ;;
        -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "device_check.sh: unknown argument '$arg' (use --dry-run, --cpu-smoke or --help)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1  # output reaches the logs line by line, even from a step its time limit kills

START_ALLOWANCE=${START_ALLOWANCE:-60}
if [ "$SMOKE" = 1 ]; then
    SUMMARY_LIMIT=${SUMMARY_LIMIT:-30}
    SOFTMAX_LIMIT=${SOFTMAX_LIMIT:-120}; CE_LIMIT=${CE_LIMIT:-120}; ADAM_LIMIT=${ADAM_LIMIT:-120}
    ACT_LIMIT=${ACT_LIMIT:-120}; LAUNCH_LIMIT=${LAUNCH_LIMIT:-120}; TEST_LIMIT=${TEST_LIMIT:-120}
else
    SUMMARY_LIMIT=${SUMMARY_LIMIT:-6}
    SOFTMAX_LIMIT=${SOFTMAX_LIMIT:-25}; CE_LIMIT=${CE_LIMIT:-35}; ADAM_LIMIT=${ADAM_LIMIT:-35}
    ACT_LIMIT=${ACT_LIMIT:-90}; LAUNCH_LIMIT=${LAUNCH_LIMIT:-20}; TEST_LIMIT=${TEST_LIMIT:-120}
fi
# The fast GPU subset: one module per family, float32 device cases, and the gpu-marked tests (test_bench.py's).
# Each kernel JITs on first use (the vectorised activations and the optimizer steps take several seconds each), so
# activations keep relu (and its leaky and parametric forms) and sigmoid, pointwise losses mse and bce, optimizers
# plain Adam: 71 distinct kernels, about 95 s (benchmarks/README.md has the estimate).
ELEMENTWISE=relu,leaky_relu,prelu,sigmoid,tanh,gelu,gelu_tanh,silu,elu,softplus
TEST_FILES=(tests/test_bench.py tests/test_optim.py tests/test_cross_entropy.py tests/test_softmax.py
            tests/test_losses_pointwise.py tests/test_activations.py)
TEST_SELECT="gpu or (device and not float64
             and not (test_optim and (AdamW or SGD or RMSprop or amsgrad or maximize or mixed_dtypes))
             and not (test_losses_pointwise and not (mse or bce))
             and not (test_activations and not (relu or sigmoid)))"
TEST_SELECT=$(printf '%s' "$TEST_SELECT" | tr -s ' \n' ' ')

if [ "$SMOKE" = 1 ]; then
    # The same steps, tiny, on the CPU: exercises this script's plumbing where there is no GPU.
    BACKEND=cpu
    SOFTMAX=(--ops softmax --sizes 2^10); ACT=(--ops relu --sizes 2^10); CE=(--sizes 64x128,32x512); ADAM=(--sizes 2^12)
    EXTRA=(--repeats 3 --max-sets 2)
    TEST_CMD=("$PY" -m pytest -q -p no:cacheprovider tests/test_bench.py -k "parse_size or bytes_hand")
    CARD=cpu-smoke
    RESULTS_ROOT=${RESULTS_ROOT:-${TMPDIR:-/tmp}/gpunn-device-check}  # keep smoke output out of the repository
else
    BACKEND=cuda
    SOFTMAX=(--ops softmax,log_softmax --sizes 2^26); ACT=(--ops "$ELEMENTWISE" --sizes 2^26)
    CE=(--sizes 8192x32768,4096x131072); ADAM=(--sizes 1e8)
    EXTRA=()
    # -v: each test's outcome reaches the log as it finishes, so a step cut short still shows what passed
    TEST_CMD=("$PY" -m pytest -v -p no:cacheprovider -k "$TEST_SELECT" "${TEST_FILES[@]}")
    CARD=$(timeout 10 nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
    CARD=$(printf '%s' "${CARD:-unknown-gpu}" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' \
           | sed 's/^-*//; s/-*$//')
fi
NAME=${CARD}-$(date -u +%Y%m%d-%H%M)
RESULTS=${RESULTS_ROOT:-benchmarks/results}/$NAME
BENCH_STEPS=5
BUDGET=$((START_ALLOWANCE + SOFTMAX_LIMIT + CE_LIMIT + ADAM_LIMIT + ACT_LIMIT + LAUNCH_LIMIT + TEST_LIMIT
          + BENCH_STEPS * SUMMARY_LIMIT))
FAILED=()

refresh() {  # refresh [figures]: rewrite summary.md (with "figures": summarise the benchmark JSON again), archive
    if [ "${1:-}" = figures ] && [ "$SUMMARY_LIMIT" != 0 ]; then
        timeout --kill-after=2 "$SUMMARY_LIMIT" "$PY" -m gpunn bench --summarize "$RESULTS" \
            >"$RESULTS/figures.md" 2>&1 \
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
    timeout --signal=TERM --kill-after=2 "$limit" "$@" 2>&1 | tee "$RESULTS/$name.log"
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
echo "budget: ${BUDGET}s = start-up ${START_ALLOWANCE}s + step limits + ${BENCH_STEPS} x ${SUMMARY_LIMIT}s summaries" \
     "(at most 420s)"
if [ "$SMOKE" = 0 ] && [ "$BUDGET" -gt 420 ]; then
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

bench softmax "$SOFTMAX_LIMIT" "${SOFTMAX[@]}"
bench cross_entropy "$CE_LIMIT" --ops cross_entropy "${CE[@]}"
bench adam_100m "$ADAM_LIMIT" --ops adam.x200 "${ADAM[@]}"
bench activations "$ACT_LIMIT" "${ACT[@]}"
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

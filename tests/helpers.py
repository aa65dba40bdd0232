"""Shared test tools: move data for a mode, poison outputs, compare with a clear failure message."""

import numpy as np

import gpunn

# (atol, rtol) per dtype for results compared against a float64 reference
TOL = {np.float32: (1e-6, 2e-6), np.float64: (1e-13, 1e-12)}
POISON = {np.float32: np.float32(np.nan), np.float64: np.float64(np.nan)}

# Sizes that catch off-by-one and partial-block bugs: empty, one element, a warp minus one, odd, not a block multiple
SIZES = [0, 1, 31, 1000, 1027]
SHAPES = [(0,), (1,), (31,), (1000,), (7, 33), (3, 5, 17)]


def put(x, mode):
    """The array as the op under test should receive it in ``mode``."""
    return gpunn.to_device(x) if mode == "device" else x


def get(x):
    return np.asarray(gpunn.to_host(x))


def poisoned(shape, dtype, mode):
    """An ``out`` buffer full of NaN, so an element the kernel forgets to write shows up."""
    return put(np.full(shape, POISON[np.dtype(dtype).type], dtype=dtype), mode)


def assert_close(actual, expected, dtype=None, atol=None, rtol=None, what="result"):
    """Compare with per-dtype tolerances; NaN must match NaN and inf must match inf exactly.

    The message says how many elements differ and shows the first few."""
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != expected {expected.shape}"
    if dtype is not None:
        assert actual.dtype == np.dtype(dtype), f"{what}: dtype {actual.dtype} != {np.dtype(dtype)}"
    t_atol, t_rtol = TOL[np.dtype(dtype or actual.dtype).type]
    atol = t_atol if atol is None else atol
    rtol = t_rtol if rtol is None else rtol
    a = actual.astype(np.float64)
    nan_bad = np.isnan(a) != np.isnan(expected)
    inf_bad = (np.isinf(a) | np.isinf(expected)) & ~(a == expected)
    finite = np.isfinite(a) & np.isfinite(expected)
    num_bad = np.zeros_like(nan_bad)
    num_bad[finite] = np.abs(a[finite] - expected[finite]) > atol + rtol * np.abs(expected[finite])
    bad = nan_bad | inf_bad | num_bad
    if bad.any():
        idx = np.argwhere(bad)[:5]
        rows = "; ".join(f"{tuple(i)}: got {a[tuple(i)]!r} want {expected[tuple(i)]!r}" for i in idx)
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} elements differ (atol={atol}, rtol={rtol}): {rows}")


def assert_doctests_pass(obj, **globs):
    """Run the docstring examples of ``obj`` (a function or a module); at least one must run and none may fail."""
    import doctest

    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder().find(obj, globs=globs):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0, f"{obj!r} has no docstring example"
    assert result.failed == 0, f"{result.failed} docstring example(s) of {obj!r} failed"


def assert_usage_error(rc, err, prog, words):
    """A command-line error as gpunn gives them: exit status 2 and one line on stderr, ``<prog>: error: ...``,
    that holds ``words`` (the option's name), and no traceback."""
    lines = err.strip().splitlines()
    assert rc == 2, f"exit status {rc}, stderr:\n{err[-2000:]}"
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{err[-2000:]}"
    assert lines[0].startswith(f"{prog}: error: ") and words in lines[0], lines[0]


def applied(result, mode) -> bool:
    """Whether an optimizer step was applied: a bool on the CPU; on the device a lazy StepResult, read here."""
    if mode == "cpu":
        assert isinstance(result, bool), f"a CPU step returns a bool, got {type(result).__name__}"
        return result
    from gpunn.optim import StepResult

    assert isinstance(result, StepResult), f"a device step returns a StepResult, got {type(result).__name__}"
    return bool(result)

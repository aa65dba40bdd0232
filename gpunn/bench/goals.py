"""The goals a GPU run must show, judged from the benchmark results of that one run.

Each goal is a ratio taken from the results: gpunn's GB/s as a fraction of a device-to-device copy moving the same
bytes ("copy"), or a peer's median time over gpunn's ("torch": above 1, gpunn is faster). Only CUDA cases that move
at least :data:`MIN_BYTES` count, so launch overhead at a small size does not decide a bandwidth goal. A goal over
several ops is judged by its worst case.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

MIN_BYTES = 1 << 28  # 256 MiB: well past the GPU's L2, so the figure is the memory system's

ELEMENTWISE = ("relu.*", "leaky_relu.*", "prelu.*", "sigmoid.*", "tanh.*", "gelu.*", "gelu_tanh.*", "silu.*",
               "elu.*", "softplus.*")


@dataclass(frozen=True)
class Goal:
    what: str
    ops: tuple  # op-name globs or family names
    metric: str  # "copy" (fraction of copy bandwidth) or the peer provider gpunn is timed against
    threshold: float
    min_n: int = 0  # the case holds at least this many elements
    peer_how: str = ""  # the peer must have run this way (its "how" note contains this text)


GOALS = (
    Goal("elementwise activations", ELEMENTWISE, "copy", 0.90),
    Goal("elementwise activations", ELEMENTWISE, "torch", 1.0),
    Goal("optimizer steps", ("optimizers",), "copy", 0.90),
    Goal("optimizer steps", ("optimizers",), "torch", 1.0),
    Goal("softmax", ("softmax.*",), "copy", 0.85),
    Goal("cross_entropy with gradient", ("cross_entropy.grad",), "copy", 0.85),
    Goal("cross_entropy with gradient vs F.cross_entropy forward + backward", ("cross_entropy.grad",), "torch", 2.0),
    Goal("Adam, 100M parameters in 200 tensors, vs torch.optim.Adam(fused=True)", ("adam.x200",), "torch", 1.0,
         min_n=10**8, peer_how="fused=True"),
)


def _matches(goal: Goal, row) -> bool:
    return any(row["family"] == pattern or fnmatchcase(row["op"], pattern) for pattern in goal.ops)


def _ratio(goal: Goal, row):
    """The goal's ratio for one result row, or None where the row does not measure it."""
    if goal.metric == "copy":
        return row["fraction_of_copy"].get("gpunn")
    peer = row["providers"].get(goal.metric)
    if peer is None or goal.peer_how not in peer.get("how", ""):
        return None
    return row["speedup_vs"].get(goal.metric)


def judge(goal: Goal, rows) -> tuple:
    """(status, worst ratio, worst row, cases): status is "PASS", "FAIL" or "not measured"."""
    cases = []
    for row in rows:
        if row["bytes"] >= MIN_BYTES and row["n"] >= goal.min_n and _matches(goal, row):
            ratio = _ratio(goal, row)
            if ratio is not None:
                cases.append((ratio, row))
    if not cases:
        return "not measured", None, None, 0
    ratio, row = min(cases, key=lambda c: c[0])
    return ("PASS" if ratio >= goal.threshold else "FAIL"), ratio, row, len(cases)


def _fmt(goal: Goal, ratio: float) -> str:
    return f"{100 * ratio:.0f}%" if goal.metric == "copy" else f"{ratio:.2f}x"


def goal_lines(datasets) -> list[str]:
    """One line per goal from the results dicts of one run (``gpunn bench`` JSON): status, the worst measured
    ratio and the threshold.

    Example:
        >>> from gpunn.bench.goals import goal_lines
        >>> goal_lines([])[0]
        'not measured: elementwise activations >= 90% of copy (no CUDA case of at least 256 MiB measures it)'
    """
    rows = [row for data in datasets if data.get("backend") == "cuda" for row in data["results"]
            if "gpunn" in row["providers"]]
    lines = []
    for goal in GOALS:
        status, ratio, row, count = judge(goal, rows)
        unit = "of copy" if goal.metric == "copy" else goal.metric
        wanted = f"{goal.what} >= {_fmt(goal, goal.threshold)} {unit}"
        if row is None:
            lines.append(f"{status}: {wanted} (no CUDA case of at least {MIN_BYTES >> 20} MiB measures it)")
        else:
            lines.append(f"{status}: {wanted}: {_fmt(goal, ratio)} (worst of {count}: {row['op']} @ {row['size']})")
    return lines

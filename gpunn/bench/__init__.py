"""Benchmarks: gpunn against PyTorch, CuPy and naive NumPy, in bytes moved, time, GB/s and fraction of a copy.

``gpunn bench`` (quick), ``gpunn bench --full`` (2^10 .. 2^26), ``--ops relu,adam``, ``--output DIR``.
From Python::

    from gpunn import bench
    data = bench.run(ops="relu", sizes=["2^20"], output="results")   # returns the same dict it writes as JSON

The harness is in :mod:`gpunn.bench.core`, the entries (one per op, each with its napkin math) in
:mod:`gpunn.bench.entries`.
"""

from .core import FULL_SIZES, QUICK_SIZES, Entry, Size, headlines, markdown, parse_size, run, summarize, write

__all__ = ["FULL_SIZES", "QUICK_SIZES", "Entry", "Size", "all_entries", "headlines", "markdown", "parse_size", "run",
           "summarize", "write"]


def all_entries():
    """Every benchmark entry (imported lazily: importing gpunn.bench touches no array library)."""
    from .entries import ENTRIES

    return list(ENTRIES)

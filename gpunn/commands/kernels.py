"""``gpunn kernels``: the kernel build check, without a GPU (see gpunn/buildcheck.py).

Compiles every registered CUDA kernel to PTX for each target (sm_80 and sm_90 by default), links it to SASS with
nvJitLink and prints, per kernel, what decides its speed: registers, shared memory, blocks per SM and occupancy,
128/64/32-bit global loads and stores and float64 instructions in the SASS, the main loop's instruction count; and
spill bytes, local memory and whether a float32 kernel is free of float64 math. --output DIR writes each build's
cubin and SASS text, to check with nvdisasm or cuobjdump.

Exit status: 0 all kernels pass; 1 a kernel failed to compile or link, spills, has float64 math in a float32 kernel,
breaks a SASS rule (a float32 elementwise or optimizer kernel without a 128-bit load, a float32 kernel under 50%
occupancy on sm_90) and is not a listed known offender, or passes a rule it is listed for; or an op module failed
to import; 2 a bad option (a --filter that matches no kernel included) or the toolchain (NVVM, nvJitLink or
nvdisasm) is missing.
"""

import json
import os
import subprocess
import sys

from ._options import UsageError, positive_int


def _argv(args):
    argv = ["kernels", "--cc", *[str(c) for c in args.cc]]
    if args.json:
        argv.append("--json")
    if args.filter:
        argv += ["--filter", args.filter]
    if args.verbose:
        argv.append("--verbose")
    if args.quick:
        argv.append("--quick")
    if args.half_sample:
        argv.append("--half-sample")
    if args.output:
        argv += ["--output", args.output]
    argv += ["--jobs", str(args.jobs)]
    return argv


def run(args):
    from numba import config

    if config.ENABLE_CUDASIM:
        # The simulator replaces numba.cuda for the whole process; the check needs the real CUDA target (it compiles,
        # it does not launch), so it runs again in a child process with the simulator off.
        env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
        return subprocess.run([sys.executable, "-m", "gpunn", *_argv(args)], env=env).returncode

    from .. import buildcheck

    try:
        ccs = [buildcheck.parse_cc(c) for c in args.cc]
    except ValueError as exc:
        raise UsageError(f"--cc: {exc}") from None
    progress = None
    if not args.json and sys.stderr.isatty():
        progress = lambda row: print(f"\r{row.name} sm_{row.cc[0]}{row.cc[1]}".ljust(60), end="",  # noqa: E731
                                     file=sys.stderr, flush=True)
    try:
        report = buildcheck.run(ccs, pattern=args.filter, progress=progress, jobs=args.jobs, quick=args.quick,
                                keep_sass=bool(args.output), half_sample_only=args.half_sample)
    except buildcheck.ToolchainError as exc:
        print(f"gpunn kernels: toolchain missing: {exc}", file=sys.stderr)
        return 2
    if progress is not None:
        print("\r" + " " * 60 + "\r", end="", file=sys.stderr)
    if args.filter and not report.rows:
        raise UsageError(f"--filter {args.filter!r}: no kernel matches")
    if args.output:
        written = buildcheck.write_files(report, args.output)
        print(f"gpunn kernels: {written} cubins and SASS files in {args.output}", file=sys.stderr)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(buildcheck.format_table(report))
        if args.verbose:
            for row in report.rows:
                if row.traceback:
                    print(f"\n{row.name} sm_{row.cc[0]}{row.cc[1]}:\n{row.traceback}", file=sys.stderr)
    return 0 if report.ok else 1


def register(subparsers):
    p = subparsers.add_parser(
        "kernels", help="compile every CUDA kernel for sm_80/sm_90 (no GPU needed): registers, occupancy, SASS loads, "
                        "spills, float64 check",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    p.add_argument("--cc", nargs="+", default=["80", "90"], metavar="CC",
                   help="target compute capabilities, e.g. 80 90 (default) or 86")
    p.add_argument("--json", action="store_true", help="print JSON (rows and summary)")
    p.add_argument("--filter", metavar="NAME", help="only kernels whose name contains NAME (or matches it as a glob)")
    p.add_argument("--quick", action="store_true",
                   help="one kernel per op module (its float32 one): a fast smoke check")
    p.add_argument("--half-sample", action="store_true",
                   help="every float32/float64 kernel, and one float16/bfloat16 kernel per op module and dtype (half "
                        "kernels take about 4x longer to compile; the test suite checks this sample)")
    p.add_argument("--jobs", "-j", type=positive_int, default=os.cpu_count() or 1, metavar="N",
                   help="compile in N processes (default: the number of CPUs)")
    p.add_argument("--output", metavar="DIR",
                   help="write each build's cubin and SASS (<kernel>.<dtype>.sm_XY.cubin/.sass) and report.json")
    p.add_argument("--verbose", "-v", action="store_true", help="print the traceback of each failure")
    p.set_defaults(func=run)

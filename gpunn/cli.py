"""The ``gpunn`` command (also ``python -m gpunn``). Each subcommand lives in ``gpunn/commands/<name>.py``.

A bad option ends with one line on stderr naming it and exit status 2, never a traceback: argparse's errors are
made one line for every parser, and a command's own checks raise ``UsageError`` (gpunn/commands/_options.py).
"""

import argparse
import importlib
import sys

from .commands._options import UsageError, one_line_error

COMMANDS = ["info", "train", "plot", "bench", "kernels", "warmup", "demo"]


def build_parser():
    parser = argparse.ArgumentParser(prog="gpunn", description="GPU kernels for training neural networks")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"gpunn.commands.{name}")
        except ModuleNotFoundError as exc:  # TODO(lead): remove once every command has landed
            if exc.name != f"gpunn.commands.{name}":
                raise
            continue
        module.register(sub)
    for p in (parser, *sub.choices.values()):
        p.error = one_line_error(p)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"gpunn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError as exc:  # sizes or widths too large for this machine: say so in one line
        print(f"gpunn {args.command}: error: out of memory ({exc or 'MemoryError'}); try smaller sizes or widths",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

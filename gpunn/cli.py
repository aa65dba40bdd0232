"""The ``gpunn`` command (also ``python -m gpunn``). Each subcommand lives in ``gpunn/commands/<name>.py``."""

import argparse
import importlib
import sys

COMMANDS = ["info", "train", "plot", "bench", "kernels", "demo"]


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
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

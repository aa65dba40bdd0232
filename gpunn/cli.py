"""The ``gpunn`` command: ``gpunn info`` (and, as they land, ``train``, ``plot``, ``bench``, ``kernels``)."""

import argparse
import json
import sys


def _info(args):
    from . import info

    data = info()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        width = max(map(len, data))
        for key, value in data.items():
            print(f"{key:<{width}}  {value}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="gpunn", description="GPU kernels for training neural networks")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="which mode is active (cuda, simulator, cpu), the device and versions")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_info)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

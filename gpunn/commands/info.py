"""``gpunn info``: which mode is active (cuda, simulator, cpu), the device and the versions."""

import json


def run(args):
    from .. import info

    data = info()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        width = max(map(len, data))
        for key, value in data.items():
            print(f"{key:<{width}}  {value}")
    return 0


def register(subparsers):
    p = subparsers.add_parser("info", help="which mode is active (cuda, simulator, cpu), the device and versions")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)

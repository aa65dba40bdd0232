"""``gpunn plot``: PNG figures of gpunn's activations and derivatives and of its optimizers' paths."""

from ._options import output_dir, require_app_extra


def run(args):
    require_app_extra(["matplotlib"])
    output_dir(args.output)
    from ..app.plot import plot_all

    for path in plot_all(args.output):
        print(f"wrote {path}")
    return 0


def register(subparsers):
    p = subparsers.add_parser(
        "plot", help="PNG figures: activations with derivatives, optimizer paths on Rosenbrock and Beale",
        description="Write PNG figures computed by gpunn itself: every activation with its derivative (from the "
                    "backward kernels), sigmoid's vs ReLU's derivative, and SGD/Momentum/NAG/RMSprop/Adam paths "
                    "on the Rosenbrock and Beale functions from the same start.")
    p.add_argument("--output", metavar="DIR", default="gpunn-figures", help="directory for the PNGs "
                   "(default gpunn-figures)")
    p.set_defaults(func=run)

"""Subcommands of the ``gpunn`` command line: one module each, with ``register(subparsers)``."""

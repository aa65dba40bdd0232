"""Option types and checks shared by the subcommands.

Every bad value ends the same way: one line on stderr, ``gpunn <command>: error: <option>: <why>``, and exit status
2, as argparse gives for its own errors. Values argparse can judge alone are checked by the ``type=`` functions
here (``positive_int``, ``seed``, ...); what needs the file system or the installed packages (an ``--output`` that is
a file, a missing extra) is checked by the command before it starts any work, by raising :class:`UsageError`, which
``gpunn.cli.main`` prints.
"""

import argparse
import importlib
import os

SEED_MAX = 2**32 - 1  # scikit-learn's random_state and NumPy's legacy seeding take seeds in [0, 2^32)

# import name -> the distribution to install (the ``app`` extra of pyproject.toml)
APP_EXTRA = {"sklearn": "scikit-learn", "matplotlib": "matplotlib", "tqdm": "tqdm"}


class UsageError(Exception):
    """A bad option value found after parsing; the message names the option. ``gpunn`` prints it and exits 2."""


def one_line_error(parser):
    """argparse's ``parser.error`` as one line (no usage block), with exit status 2 as argparse gives.

    >>> p = argparse.ArgumentParser(prog="gpunn demo")
    >>> p.error = one_line_error(p)
    >>> p.parse_args(["--nope"])
    Traceback (most recent call last):
    SystemExit: 2
    """

    def error(message):
        parser.exit(2, f"{parser.prog}: error: {message} (see {parser.prog} --help)\n")

    return error


def _int(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def positive_int(text):
    """An integer > 0.

    >>> positive_int("3")
    3
    >>> positive_int("0")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be > 0, got 0
    """
    value = _int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def at_least(minimum, why):
    """A type for an integer >= ``minimum``; ``why`` says what needs the bound.

    >>> at_least(2, "one to train on and one to test")("1")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be >= 2 (one to train on and one to test), got 1
    """

    def parse(text):
        value = _int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum} ({why}), got {text}")
        return value

    return parse


def positive_float(text):
    """A finite number > 0.

    >>> positive_float("1e-3")
    0.001
    >>> positive_float("nan")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be a finite number > 0, got nan
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def seed(text):
    """A seed in [0, 2^32): what scikit-learn's ``random_state`` accepts.

    >>> seed("-1")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be in [0, 4294967295], got -1
    """
    value = _int(text)
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be in [0, {SEED_MAX}], got {text}")
    return value


def thread_count(text):
    """A thread count in [1, NUMBA_NUM_THREADS] (Numba cannot start more threads than its pool holds).

    >>> thread_count("1")
    1
    """
    import numba

    value = positive_int(text)
    limit = numba.config.NUMBA_NUM_THREADS
    if value > limit:
        raise argparse.ArgumentTypeError(f"must be <= NUMBA_NUM_THREADS={limit}, got {text}")
    return value


def file_stem(text):
    """A file name without a directory part (the stem of files written inside an ``--output`` directory).

    >>> file_stem("a/b")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be a file name without '/', got 'a/b'
    """
    if not text or text in (".", "..") or "/" in text or (os.altsep and os.altsep in text):
        raise argparse.ArgumentTypeError(f"must be a file name without '/', got {text!r}")
    return text


def output_dir(path, option="--output"):
    """Create the directory ``path`` (and its parents) now, before any work, so that a path that is a file or
    cannot be created fails at once rather than after a long run. Raises :class:`UsageError` naming ``option``.

    >>> output_dir("")
    Traceback (most recent call last):
    gpunn.commands._options.UsageError: --output: must be a directory path, got ''
    """
    if not path:
        raise UsageError(f"{option}: must be a directory path, got {path!r}")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{option} {path}: exists and is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot create the directory ({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: the directory is not writable")
    return path


def require_app_extra(modules):
    """Import each of ``modules`` (keys of :data:`APP_EXTRA`) now; if one is missing, raise :class:`UsageError`
    naming it and the install command, before the command starts any work."""
    for name in modules:
        dist = APP_EXTRA[name]
        try:
            importlib.import_module(name)
        except ImportError:
            raise UsageError(f'{dist} is not installed (the app extra): pip install "gpunn[app]"') from None

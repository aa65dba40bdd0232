"""Compile once per machine: compiled CPU loops and CUDA kernels kept on disk, shared by every process.

Why not Numba's own ``cache=True``: gpunn's loops and kernels are closures built per dtype and option by factories
(``_elementwise._map1(f, dtype)``, the optimizer's ``step_dispatcher``), and Numba keys a closure by the pickle of
its cell values. A cell that holds a jitted function pickles with a per-process random id, so such an entry is never
found again (every process compiles and adds another file). Numba also keeps every signature of a function in one
index file that concurrent writers can overwrite (an entry lost, or a data file name reused by another signature),
and it checks only the timestamp of the function's own source file, not of the functions it calls.

So gpunn gives each dispatcher it builds its own cache object (Numba's per-dispatcher protocol: ``load_overload``
before compiling, ``save_overload`` after), keyed by what the compiled code depends on:

* the function: its module, name and bytecode, and, recursively, the values its closure holds (jitted functions by
  their own description, NumPy scalars by dtype and bits), the plain values of the globals it reads, its options;
* the signature, and Numba's description of the target (CPU name and features; CUDA: runtime version and compute
  capability);
* the environment: a hash of every gpunn source file, the Python, NumPy, llvmlite, Numba and numba-cuda versions,
  and Numba's code generation settings.

Each entry is one file named by the hash of its key. It is written to a temporary file and renamed into place, so a
reader sees a whole entry or none, and two processes that compile the same thing write the same entry. An entry that
does not load (truncated, another version, another key) counts as absent: the function compiles and the entry is
rewritten. A function whose description cannot be made (a closure value of an unknown type) is compiled as before
and listed by :func:`stats`.

Where: ``GPUNN_CACHE_DIR`` (default ``$XDG_CACHE_HOME/gpunn``, else ``~/.cache/gpunn``), one subdirectory per
environment; the newest few are kept. ``GPUNN_CACHE=0`` turns the cache off. A directory that cannot be written
turns it off for the process.

What a module does to be cached: build CPU loops with :func:`gpunn._cpu.loops` (or other jitted functions with
:func:`njit`), and launch CUDA kernels through :class:`gpunn._launch.Kernel`.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import sys
import threading
import types as pytypes
import uuid

import numpy as np

FORMAT = 1            # of an entry file; a new format is a new environment directory
KEEP_ENVIRONMENTS = 6  # environment directories kept (the most recently used)

_lock = threading.Lock()
_stats = {"loaded": 0, "saved": 0, "compiled": 0}
_uncacheable = {}     # function name -> why it is compiled without the cache
_state = {}           # "root", "environment": resolved once per process


# ---- where ---------------------------------------------------------------------------------------------------------
def enabled() -> bool:
    """True unless ``GPUNN_CACHE`` is 0/off/false/no, or the cache directory could not be written."""
    if os.environ.get("GPUNN_CACHE", "1").strip().lower() in ("0", "off", "false", "no"):
        return False
    return _state.get("writable", True)


def root() -> str:
    """The cache's top directory: ``GPUNN_CACHE_DIR``, else ``$XDG_CACHE_HOME/gpunn`` or ``~/.cache/gpunn``."""
    configured = os.environ.get("GPUNN_CACHE_DIR")
    if configured:
        return os.path.abspath(os.path.expanduser(configured))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gpunn")


def directory() -> str:
    """This environment's directory inside :func:`root` (gpunn's sources and the library versions name it)."""
    env = _environment()
    return os.path.join(root(), env[0])


def _environment():
    """(directory name, description) of this process's environment; computed once."""
    env = _state.get("environment")
    if env is None:
        import llvmlite
        import numba
        from numba.core import config

        described = (FORMAT, _source_hash(), sys.version, sys.implementation.cache_tag, np.__version__,
                     llvmlite.__version__, numba.__version__, _version("numba-cuda"),
                     tuple(repr(getattr(config, name, None)) for name in _CODEGEN_SETTINGS))
        digest = hashlib.sha256(repr(described).encode()).hexdigest()[:20]
        env = _state["environment"] = (f"{_version('gpunn') or 'src'}-{sys.implementation.cache_tag}-{digest}",
                                       described)
    return env


# Numba settings that change the code it generates (a process run with another value keys apart)
_CODEGEN_SETTINGS = ("OPT", "LOOP_VECTORIZE", "SLP_VECTORIZE", "ENABLE_AVX", "BOUNDSCHECK", "FASTMATH",
                     "DEBUGINFO_DEFAULT", "CPU_NAME", "CPU_FEATURES", "CUDA_DEBUGINFO_DEFAULT",
                     "CUDA_DEFAULT_PTX_CC", "CUDA_ENABLE_PYNVJITLINK")


def _source_hash() -> str:
    """sha256 over every gpunn source file (relative path and contents): any change to gpunn is a new key."""
    package = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha256()
    for folder, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(folder, name)
            h.update(os.path.relpath(path, package).encode() + b"\0")
            with open(path, "rb") as f:
                h.update(f.read() + b"\0")
    return h.hexdigest()


def _version(dist):
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# ---- what a compiled function depends on ------------------------------------------------------------------------------
class Uncacheable(Exception):
    """A value in a function's closure that :func:`describe` cannot describe exactly."""


_PLAIN = (bool, int, float, complex, str, bytes, type(None))


def describe(obj, _seen=None):
    """A canonical, process-independent description (nested tuples of str/int) of ``obj`` as compiled code sees it.
    Raises :class:`Uncacheable` for a value it cannot describe exactly."""
    seen = set() if _seen is None else _seen
    if isinstance(obj, _PLAIN):
        return (type(obj).__name__, repr(obj))
    if isinstance(obj, np.generic):
        return ("np", obj.dtype.str, obj.tobytes().hex())
    if isinstance(obj, np.dtype):  # the name too: ml_dtypes' types share a str ('<V2' is bfloat16 and others)
        return ("dtype", obj.str, obj.name, repr(obj.descr) if obj.fields else "")
    if isinstance(obj, np.ndarray):
        return ("ndarray", obj.dtype.str, obj.shape, hashlib.sha256(np.ascontiguousarray(obj).tobytes()).hexdigest())
    if isinstance(obj, (tuple, list)):
        return (type(obj).__name__, tuple(describe(v, seen) for v in obj))
    if isinstance(obj, (set, frozenset)):
        return ("set", tuple(sorted(repr(describe(v, seen)) for v in obj)))
    if isinstance(obj, dict):
        return ("dict", tuple(sorted((repr(describe(k, seen)), describe(v, seen)) for k, v in obj.items())))
    if isinstance(obj, pytypes.ModuleType):
        return ("module", obj.__name__)
    if isinstance(obj, pytypes.FunctionType):
        return _describe_function(obj, seen)
    if isinstance(obj, (pytypes.BuiltinFunctionType, type)):
        return ("named", getattr(obj, "__module__", None) or "", obj.__qualname__)
    return _describe_numba(obj, seen)


def _describe_numba(obj, seen):
    from numba.core import types
    from numba.core.dispatcher import Dispatcher
    from numba.core.extending import _Intrinsic

    if isinstance(obj, types.Type):
        return ("numba-type", str(obj))
    if isinstance(obj, _Intrinsic):
        return ("intrinsic", _describe_function(obj._defn, seen))
    if isinstance(obj, Dispatcher) or _is_cuda_dispatcher(obj):
        return ("jit", type(obj).__name__, _describe_function(obj.py_func, seen), describe(obj.targetoptions, seen))
    raise Uncacheable(f"a {type(obj).__module__}.{type(obj).__qualname__} in its closure")


def _is_cuda_dispatcher(obj):
    module = sys.modules.get("numba.cuda.dispatcher")
    return module is not None and isinstance(obj, module.CUDADispatcher)


def _describe_function(fn, seen):
    name = (fn.__module__ or "", fn.__qualname__)
    if id(fn) in seen:  # a function that reaches itself
        return ("function-again",) + name
    seen.add(id(fn))
    try:
        cells = tuple(describe(cell.cell_contents, seen) for cell in fn.__closure__ or ())
        if not _is_gpunn(fn):  # another library's function: its version (in the environment) fixes its code
            return ("library-function", *name, cells)
        code = fn.__code__
        return ("function", *name, _describe_code(code), describe(fn.__defaults__, seen), cells,
                _describe_globals(fn, code, seen))
    finally:
        seen.discard(id(fn))


def _is_gpunn(fn):
    module = fn.__module__ or ""
    return module == "gpunn" or module.startswith("gpunn.")


def _describe_code(code):
    return (code.co_code.hex(), tuple(_describe_const(c) for c in code.co_consts), code.co_names)


def _describe_const(c):
    if isinstance(c, pytypes.CodeType):
        return _describe_code(c)
    if isinstance(c, tuple):
        return tuple(_describe_const(v) for v in c)
    if isinstance(c, frozenset):  # its repr's order changes with the process's string hashing
        return ("frozenset", tuple(sorted(repr(_describe_const(v)) for v in c)))
    return repr(c)


def _global_names(code):
    names = set(code.co_names)
    for c in code.co_consts:
        if isinstance(c, pytypes.CodeType):
            names |= _global_names(c)
    return names


def _describe_globals(fn, code, seen):
    """The globals ``fn`` reads, by value where compiled code would freeze that value (a module constant computed at
    import from the environment is part of the key); anything else by its type."""
    out = []
    for name in sorted(_global_names(code)):
        if name not in fn.__globals__:
            continue
        value = fn.__globals__[name]
        try:
            out.append((name, describe(value, seen)))
        except Uncacheable:
            out.append((name, ("opaque", type(value).__qualname__)))
    return tuple(out)


# ---- the cache a dispatcher consults ----------------------------------------------------------------------------------
class DiskCache:
    """Numba's per-dispatcher cache protocol over gpunn's entry files (see the module docstring)."""

    def __init__(self, dispatcher, target: str):
        self._py_func = dispatcher.py_func
        self._options = dispatcher.targetoptions
        self._target = target  # "cpu" or "cuda"
        self._name = f"{self._py_func.__module__}.{self._py_func.__qualname__}"
        self._identity = None
        self._keys = {}  # signature -> (digest, path), from the load that preceded a compile

    @property
    def cache_path(self):
        return directory()

    def enable(self):
        pass

    def disable(self):
        pass

    def flush(self):
        pass

    def _identity_digest(self):
        if self._identity is None:
            try:
                described = ("target", self._target, describe(self._py_func), describe(self._options))
            except Uncacheable as exc:
                self._identity = False
                _uncacheable[self._name] = str(exc)
            else:
                self._identity = hashlib.sha256(repr(described).encode()).hexdigest()
        return self._identity

    def _entry(self, sig, codegen):
        identity = self._identity_digest()
        if not identity:
            return None
        key = repr((identity, _environment()[1], self._target, str(sig), codegen.magic_tuple()))
        digest = hashlib.sha256(key.encode()).hexdigest()
        short = self._py_func.__qualname__.replace("<locals>.", "").replace("<", "").replace(">", "")[-60:]
        return digest, os.path.join(directory(), f"{short}-{digest[:32]}.nbc")

    def load_overload(self, sig, target_context):
        if not enabled():
            return None
        with _target(self._target):
            entry = self._entry(sig, target_context.codegen())
            if entry is None:
                return None
            self._keys[sig] = entry
            payload = _read(*entry)
            if payload is None:
                return None
            try:
                data = _rebuild(self._target, target_context, payload)
            except Exception:  # an entry written by an incompatible build: compile instead
                return None
        with _lock:
            _stats["loaded"] += 1
        return data

    def save_overload(self, sig, data):
        with _lock:
            _stats["compiled"] += 1
        if not enabled():
            return
        entry = self._keys.pop(sig, None)
        if entry is None:
            return
        reason = _not_cachable(self._target, data)
        if reason:
            _uncacheable[self._name] = reason
            return
        if _write(entry[1], entry[0], _reduce(self._target, data)):
            with _lock:
                _stats["saved"] += 1


def _target(target):
    if target == "cuda":
        from numba.cuda import utils

        return utils.numba_target_override()
    import contextlib

    return contextlib.nullcontext()


def _reduce(target, data):
    if target == "cuda":
        from numba.cuda.serialize import dumps

        return dumps(data._reduce_states())
    from numba.core.serialize import dumps

    return dumps(data._reduce())


def _rebuild(target, target_context, payload):
    data = pickle.loads(payload)
    if target == "cuda":
        from numba.cuda.dispatcher import _Kernel

        return _Kernel._rebuild(**data)
    from numba.core.compiler import CompileResult
    from numba.core.runtime import nrt
    from numba.np.ufunc.parallel import _launch_threads

    # What compiled code calls by symbol must exist before it is linked: Numba's runtime (allocation) and its thread
    # functions (get_thread_id, even in a serial build). A compile provides both while it types the function (and
    # first imports all of Numba's typing and lowering registries, which a load does not need: most of a first
    # call's time); a load provides them here.
    nrt.rtsys.initialize(target_context)
    _launch_threads()
    return CompileResult._rebuild(target_context, *data)


def _not_cachable(target, data) -> str | None:
    """Why a compile result must not be stored (it points at this process's memory, or at lifted Python code), or
    None. A CUDA kernel is stored once it holds its linked binary."""
    if target == "cuda":
        if getattr(data, "launch_config_sensitive", False):
            return "its code depends on the launch configuration"
        if not data._codelibrary._cubin_cache:
            return "no linked binary to store (a stubbed driver)"
        return None
    if any(not lifted.can_cache for lifted in data.lifted):
        return "it has lifted (object-mode) loops"
    if data.library.has_dynamic_globals:
        return "it refers to this process's memory (dynamic globals)"
    return None


def _read(digest, path):
    """The payload stored under ``digest`` at ``path``, or None (absent, unreadable, or written for another key)."""
    try:
        with open(path, "rb") as f:
            fmt, stored, payload = pickle.load(f)
    except FileNotFoundError:
        return None
    except Exception:  # truncated or foreign: a miss; the compile rewrites it
        return None
    if fmt != FORMAT or stored != digest:
        return None
    return payload


def _write(path, digest, payload) -> bool:
    """Write an entry atomically (a temporary file renamed into place); False if the directory is not writable."""
    folder = os.path.dirname(path)
    tmp = f"{path}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        if not os.path.isdir(folder):
            os.makedirs(folder, exist_ok=True)
            _prune(os.path.dirname(folder))
        with open(tmp, "wb") as f:
            pickle.dump((FORMAT, digest, payload), f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
        return True
    except OSError:
        _state["writable"] = False  # read-only or full: compile without the cache from now on
        with _ignored():
            os.unlink(tmp)
        return False


def _prune(top):
    """Keep the :data:`KEEP_ENVIRONMENTS` most recently created environment directories under ``top``."""
    try:
        folders = [e for e in os.scandir(top) if e.is_dir() and not e.name.startswith(".")]
    except OSError:
        return
    folders.sort(key=lambda e: e.stat().st_mtime, reverse=True)
    for old in folders[KEEP_ENVIRONMENTS:]:
        shutil.rmtree(old.path, ignore_errors=True)


class _ignored:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], OSError)


# ---- attaching -------------------------------------------------------------------------------------------------------
def attach(dispatcher, target: str = "cpu"):
    """Give ``dispatcher`` (a ``numba.njit`` or ``cuda.jit`` dispatcher) gpunn's disk cache; returns it. Compiles
    nothing. Simulated CUDA kernels (which never compile) are returned unchanged."""
    if hasattr(dispatcher, "_cache") and not isinstance(dispatcher._cache, DiskCache):
        dispatcher._cache = DiskCache(dispatcher, target)
    return dispatcher


def njit(fn=None, **options):
    """``numba.njit`` with gpunn's disk cache (usable as ``@njit`` or ``@njit(**options)``)."""
    import numba

    if fn is None:
        return lambda f: attach(numba.njit(**options)(f))
    return attach(numba.njit(**options)(fn))


def stats() -> dict:
    """This process's counts: entries ``loaded`` from disk, functions ``compiled`` (with or without an entry
    saved), entries ``saved``; and ``uncacheable``: function name -> why it compiles without the cache."""
    with _lock:
        return {**_stats, "uncacheable": dict(_uncacheable)}


def clear() -> str:
    """Delete the whole cache (every environment's directory); returns the directory removed."""
    top = root()
    shutil.rmtree(top, ignore_errors=True)
    return top


def size_bytes() -> int:
    """Bytes held by this environment's entries."""
    try:
        return sum(e.stat().st_size for e in os.scandir(directory()) if e.name.endswith(".nbc"))
    except OSError:
        return 0


__all__ = ["attach", "clear", "describe", "directory", "enabled", "njit", "root", "size_bytes", "stats"]

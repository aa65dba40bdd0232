"""MPI through mpi4py, with a deadline on every wait and an error that names the rank that is missing.

A blocking MPI collective waits forever for a rank that raised, was killed or is stuck. Every collective here is
started non-blocking and completed by :meth:`Channel.wait`, which polls it against a deadline. Beside the user's
communicator each :class:`Channel` keeps a duplicate of it for control messages, which every waiting rank reads:

* ``FAIL``: a rank that gives up (an exception inside :func:`gpunn.distributed.guard`, or a timeout) tells every
  other rank why; a rank waiting in a collective raises :class:`RankFailedError` naming that rank at once.
* ``PING`` / ``PONG``: a rank whose deadline passes pings every other rank and waits a short grace period; every
  rank that is itself waiting in a collective answers with the name of that collective. Ranks that do not answer
  (dead, stuck in their own code, or still computing) are named in the :class:`CollectiveTimeoutError`.

After such an error the communicator is unusable (a started collective cannot be cancelled): end the job, e.g.
``comm.Abort(1)``, which also ends a rank that is stuck.
"""

from __future__ import annotations

import pickle
import time

import numpy as np

DEFAULT_TIMEOUT = 300.0   # seconds a rank waits in one collective for the others
PING_GRACE = 5.0          # seconds a timed-out rank waits for the other ranks to answer its ping
SPIN_SECONDS = 0.05       # a wait polls without sleeping this long, then sleeps 1 ms between polls
TAG_FAIL, TAG_PING, TAG_PONG = 7701, 7702, 7703


class DistributedError(RuntimeError):
    """A collective could not complete. ``ranks``: the ranks found to be the cause (may be empty)."""

    def __init__(self, message, ranks=()):
        super().__init__(message)
        self.ranks = tuple(ranks)


class RankFailedError(DistributedError):
    """Another rank reported that it failed (its message is included)."""


class CollectiveTimeoutError(DistributedError, TimeoutError):
    """A collective did not complete within the timeout."""


def mpi():
    """The ``mpi4py.MPI`` module, or an ImportError that says how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError("gpunn.distributed needs mpi4py and an MPI library: pip install 'gpunn[dist]' "
                          "(mpi4py and the MPICH wheel)") from exc
    return MPI


def check_timeout(timeout):
    """Seconds as a float > 0 (``None``: :data:`DEFAULT_TIMEOUT`)."""
    if timeout is None:
        return DEFAULT_TIMEOUT
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float, np.integer, np.floating)):
        raise TypeError(f"timeout must be a number of seconds, got {type(timeout).__name__}")
    if not 0 < float(timeout) < float("inf"):
        raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout}")
    return float(timeout)


_channels: dict = {}


def channel(comm=None) -> Channel:
    """The :class:`Channel` of an mpi4py communicator (``None``: ``COMM_WORLD``), made on first use.

    Making one duplicates the communicator, a collective call: every rank reaches its first use of a communicator
    in the same call, as with any collective."""
    MPI = mpi()
    if comm is None:
        comm = MPI.COMM_WORLD
    if isinstance(comm, Channel):
        return comm
    if not isinstance(comm, MPI.Comm):
        raise TypeError(f"comm must be an mpi4py communicator (e.g. MPI.COMM_WORLD), got {type(comm).__name__}")
    key = comm.py2f()
    cached = _channels.get(key)
    if cached is None or cached.comm != comm:
        cached = _channels[key] = Channel(comm)
    return cached


class Channel:
    """A communicator, its control duplicate, and the waiting rules (see the module docstring)."""

    def __init__(self, comm):
        self.MPI = mpi()
        self.comm = comm
        self.ctl = comm.Dup()
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.calls = 0              # collectives started, to name them in messages
        self.waiting_in = None      # what this rank is waiting in (answered to pings)
        self.seconds = 0.0          # time spent waiting in collectives (all-reduce time in benchmarks)
        self._sends = []            # control sends in flight (their buffers must live until they complete)

    # ---- waiting -----------------------------------------------------------------------------------------------------
    def wait(self, requests, what, timeout):
        """Complete ``requests`` (one collective named ``what``) or raise a DistributedError naming the cause."""
        self.calls += 1
        self.waiting_in = f"{what} (call {self.calls})"
        start = time.perf_counter()
        deadline = time.monotonic() + timeout
        relax = time.monotonic() + SPIN_SECONDS
        try:
            while not self.MPI.Request.Testall(requests):
                self._read_control()
                now = time.monotonic()
                if now > deadline:
                    self._timed_out(timeout)
                # yield the core at once (ranks may share cores), sleep only after a long wait
                time.sleep(0 if now < relax else 1e-3)
        finally:
            self.seconds += time.perf_counter() - start
            self.waiting_in = None

    def _read_control(self):
        MPI = self.MPI
        status = MPI.Status()
        while self.ctl.iprobe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status):
            source, tag = status.Get_source(), status.Get_tag()
            message = self.ctl.recv(source=source, tag=tag)
            if tag == TAG_PING:
                self._send(self.waiting_in, source, TAG_PONG)
            elif tag == TAG_FAIL:
                text, ranks = message
                raise RankFailedError(f"rank {source} of {self.size} stopped: {text}", ranks or (source,))

    def _timed_out(self, timeout):
        MPI = self.MPI
        others = [r for r in range(self.size) if r != self.rank]
        for r in others:
            self._send(None, r, TAG_PING)
        answers = {}
        status = MPI.Status()
        end = time.monotonic() + min(PING_GRACE, timeout)
        while len(answers) < len(others) and time.monotonic() < end:
            if self.ctl.iprobe(source=MPI.ANY_SOURCE, tag=TAG_PONG, status=status):
                answers[status.Get_source()] = self.ctl.recv(source=status.Get_source(), tag=TAG_PONG)
            else:
                self._read_control()
                time.sleep(1e-3)
        silent = [r for r in others if r not in answers]
        mine = self.waiting_in
        if silent:
            who = ", ".join(map(str, silent))
            text = (f"timed out after {timeout:g} s in {mine}: rank{'s' if len(silent) > 1 else ''} {who} of "
                    f"{self.size} did not answer (failed, killed, or stuck outside gpunn.distributed)")
        else:
            where = "; ".join(f"rank {r} in {answers[r]}" for r in others)
            text = (f"timed out after {timeout:g} s in {mine}: every rank answered but they wait in different "
                    f"collectives ({where}): the ranks called different functions or sizes")
        self.notify_failure(text, silent, skip=silent)
        raise CollectiveTimeoutError(f"rank {self.rank}: {text}", silent)

    def _send(self, obj, dest, tag):
        self._sends = [r for r in self._sends if not r.Test()]
        self._sends.append(self.ctl.isend(obj, dest=dest, tag=tag))

    def notify_failure(self, text, ranks=(), skip=()):
        """Tell every other rank (but ``skip``: ranks that did not answer) that this one gives up, and why.

        Best effort: never raises, never blocks long."""
        requests = []
        for r in range(self.size):
            if r != self.rank and r not in skip:
                try:
                    requests.append(self.ctl.isend((str(text), tuple(ranks)), dest=r, tag=TAG_FAIL))
                except Exception:  # noqa: BLE001  a dead peer: the others still get the message
                    pass
        end = time.monotonic() + 1.0
        try:
            while requests and not self.MPI.Request.Testall(requests) and time.monotonic() < end:
                time.sleep(1e-3)
        except Exception:  # noqa: BLE001
            pass

    # ---- small collectives on Python objects -------------------------------------------------------------------------
    def allgather_obj(self, obj, what, timeout):
        """Every rank's ``obj`` (picklable), in rank order, through byte buffers (so that the wait has a deadline)."""
        MPI = self.MPI
        data = np.frombuffer(pickle.dumps(obj), np.uint8)
        sizes = np.zeros(self.size, np.int64)
        self.wait([self.comm.Iallgather(np.array([data.size], np.int64), sizes)], what, timeout)
        displs = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        out = np.empty(int(sizes.sum()), np.uint8)
        self.wait([self.comm.Iallgatherv(data, [out, (sizes, displs), MPI.BYTE])], what, timeout)
        return [pickle.loads(out[d:d + s].tobytes()) for d, s in zip(displs, sizes)]

"""An ordered, bounded map over worker processes (or inline for one worker).

Results come back in input order whatever the worker count, so output bytes do
not depend on ``workers``; at most a few items are in flight, so memory stays
flat however long the input is. Workers are forked by default, so large
read-only arrays passed in ``initargs`` are shared with the parent, not copied
or pickled. A worker that dies (the OOM killer) fails the map with
``BrokenProcessPool`` instead of leaving it waiting forever.

Workers never outlive their parent: on Linux each asks the kernel for SIGKILL
when its parent dies (``PR_SET_PDEATHSIG``), which covers a parent killed with
SIGKILL. While a pool runs in the main thread, SIGTERM (what Kubernetes sends
on pod deletion) raises ``SystemExit(143)`` in the parent: queued tasks are
dropped, running ones finish, the workers exit, and the ``finally`` blocks above
run (atomic writes remove their temporaries); the exit status is a SIGTERM
death's. Workers ignore SIGINT: Ctrl-C reaches the parent, which stops them.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent_pid: int) -> None:
    """Asks for SIGKILL when the parent dies (Linux); exits now if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def _worker_init(parent_pid: int, initializer: Callable | None, initargs: tuple) -> None:
    _die_with_parent(parent_pid)
    # A forked worker inherits the parent's handlers: SIGTERM must kill it, not run
    # the parent's clean-up; SIGINT (Ctrl-C reaches the whole process group) is the
    # parent's to handle, which then stops the workers.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer(*initargs)


def ordered_map(fn: Callable, items: Iterable, *, workers: int = 1, initializer: Callable | None = None,
                initargs: tuple = (), in_flight_per_worker: int = 2, start_method: str = "fork") -> Iterator:
    """``map(fn, items)`` in ``workers`` processes started by ``start_method``."""
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        for item in items:
            yield fn(item)
        return
    ctx = multiprocessing.get_context(start_method)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                               initargs=(os.getpid(), initializer, initargs))
    handles_sigterm = threading.current_thread() is threading.main_thread()
    terminated: list[int] = []

    def stop_if_terminated() -> None:
        # The handler's own SystemExit is lost where Python ignores exceptions (an at-fork hook).
        if terminated:
            raise SystemExit(128 + terminated[0])

    if handles_sigterm:
        def on_sigterm(signum, _frame):
            terminated.append(signum)
            raise SystemExit(128 + signum)

        previous = signal.signal(signal.SIGTERM, on_sigterm)
    pending: deque = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            stop_if_terminated()
            if len(pending) >= workers * in_flight_per_worker:
                yield pending.popleft().result()
                stop_if_terminated()
        while pending:
            yield pending.popleft().result()
    finally:  # stopped early (error, consumer gone, signal): what has not started never runs
        if handles_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
        # Tasks already running finish (a fraction of a second to a few seconds): a worker
        # killed mid-reply would leave the pool's result pipe half-written and shutdown hung.
        pool.shutdown(wait=True, cancel_futures=True)

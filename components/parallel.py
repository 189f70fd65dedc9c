"""An ordered, bounded map over worker processes (or inline for one worker).

Results come back in input order whatever the worker count, so output bytes do
not depend on ``workers``; at most a few items are in flight, so memory stays
flat however long the input is. Workers are forked by default, so large
read-only arrays passed in ``initargs`` are shared with the parent, not copied
or pickled. A worker that dies (the OOM killer) fails the map with
``BrokenProcessPool`` instead of leaving it waiting forever.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor


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
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=initializer,
                             initargs=initargs) as pool:
        pending: deque = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= workers * in_flight_per_worker:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # stopped early: what has not started is not run
            for future in pending:
                future.cancel()

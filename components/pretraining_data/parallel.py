"""An ordered, bounded map over worker processes (or inline for one worker).

Results come back in input order whatever the worker count, so output bytes do
not depend on ``workers``; at most a few items are in flight, so memory stays
flat however long the input is. Workers are forked, so large read-only arrays
passed in ``initargs`` are shared with the parent, not copied or pickled.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator


def ordered_map(fn: Callable, items: Iterable, *, workers: int = 1, initializer: Callable | None = None,
                initargs: tuple = (), in_flight_per_worker: int = 2) -> Iterator:
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        for item in items:
            yield fn(item)
        return
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers, initializer=initializer, initargs=initargs) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.apply_async(fn, (item,)))
            if len(pending) >= workers * in_flight_per_worker:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

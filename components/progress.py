"""Progress lines for long steps: counts and rates, at most every few seconds."""

from __future__ import annotations

import sys
import time


class Progress:
    """Counts work units and logs ``label: N unit (R unit/s)`` now and then.

    Logs go to stderr so that a step's stdout stays machine-readable; in a KFP
    pod both end up in the step's log.
    """

    def __init__(self, label: str, unit: str = "items", total: int | None = None,
                 every_s: float = 5.0, stream=None):
        self.label = label
        self.unit = unit
        self.total = total
        self.every_s = every_s
        self.stream = stream if stream is not None else sys.stderr
        self.count = 0
        self.start = time.monotonic()
        self._last = self.start

    def add(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._emit(now)

    def _emit(self, now: float, final: bool = False) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.count / elapsed
        of = f"/{self.total:,}" if self.total else ""
        tag = "done" if final else "..."
        print(f"{self.label}: {self.count:,}{of} {self.unit} in {elapsed:.1f}s "
              f"({_human(rate)} {self.unit}/s) {tag}", file=self.stream, flush=True)

    def done(self) -> float:
        """Logs the final line and returns the elapsed seconds."""
        now = time.monotonic()
        self._emit(now, final=True)
        return now - self.start


def _human(x: float) -> str:
    for unit in ("", "k", "M", "G"):
        if abs(x) < 1000:
            return f"{x:.1f}{unit}"
        x /= 1000
    return f"{x:.1f}T"

"""Shared measuring for the ``bertja bench`` commands.

Each benchmark runs the real step as a child process (so its peak memory is its
own) and compares it with "the MeCab floor": one bare single-process fugashi
pass over the same text, the least work any of these steps can do.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterable

from components.mecab import generic_tagger


def _tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ppid, pages = int(fields[1]), int(fields[21])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = pages * page
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        stack.extend(children.get(p, []))
    return total


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_measured(argv: list[str], env: dict | None = None, poll_s: float = 0.05, stdout=None) -> dict:
    """Runs a command; returns wall seconds, the peak summed RSS of its process tree and
    its CPU seconds (user + system of the whole tree: robust on a busy machine).

    ``stdout``: where the child's stdout goes (e.g. ``subprocess.DEVNULL``); default: ours.
    """
    cpu = _children_cpu_seconds()
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=stdout)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss_bytes(proc.pid))
        time.sleep(poll_s)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"benchmarked command failed ({proc.returncode}): {' '.join(argv)}")
    return {"wall_s": wall, "peak_rss_bytes": peak, "cpu_s": _children_cpu_seconds() - cpu}


def bertja_argv(*args: str) -> list[str]:
    """The argv that runs ``bertja ARGS`` with this interpreter."""
    return [sys.executable, "-m", "pipelines.cli", *args]


def mecab_floor_seconds(texts: Iterable[str], mecab_dic: str = "unidic_lite") -> tuple[float, int]:
    """Seconds for one bare fugashi pass over ``texts`` (and the number of texts).

    ``texts`` should be produced before timing starts if producing them is not
    itself part of the floor (callers pass a list).
    """
    tagger = generic_tagger(mecab_dic)
    n = 0
    start = time.perf_counter()
    for text in texts:
        for _ in tagger(text):
            pass
        n += 1
    return time.perf_counter() - start, n


def print_report(title: str, rows: dict[str, object]) -> None:
    """Prints ``key: value`` lines a person can read and a script can grep."""
    print(f"== {title} ==")
    width = max(map(len, rows))
    for k, v in rows.items():
        if isinstance(v, float):
            v = f"{v:.3f}"
        print(f"{k:<{width}} : {v}")
    sys.stdout.flush()


def gib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB"

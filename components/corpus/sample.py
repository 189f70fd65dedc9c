"""Random lines for tokenizer training (SPEC 6.2: the recipe samples 10M lines).

Two streaming passes: count the non-empty lines, then select each one with
probability (still needed / still left) (Knuth's selection sampling). Memory
does not grow with the input or with K; the result is the same for the same
seed; lines come out in input order. Inputs are read twice, so they must be
files or objects: a pipe (``/dev/stdin``) is refused rather than sampled empty.
"""

from __future__ import annotations

import random
import time

from components import storage
from components.corpus.split import input_list
from components.errors import BadInput
from components.progress import Progress


def _non_empty_lines(inputs: list[str]):
    for uri in inputs:
        for _lineno, line in storage.iter_lines(uri):
            line = line.strip()
            if line:
                yield line


def sample_lines(inputs: list[str], output: str, *, lines: int, seed: int = 0) -> dict:
    """Writes ``lines`` random non-empty lines of ``inputs`` (all of them if fewer)."""
    inputs = input_list(inputs)
    if lines < 1:
        raise BadInput(f"lines={lines}: must be >= 1")
    storage.check_outputs(inputs, files=[output])
    for uri in inputs:
        storage.check_rereadable(uri)
    start = time.monotonic()
    progress = Progress("sample: counting", "lines")
    available = 0
    for _ in _non_empty_lines(inputs):
        available += 1
        progress.add()
    progress.done()
    rng = random.Random(seed)
    wanted = min(lines, available)
    left, written = available, 0
    progress = Progress("sample: selecting", "lines", total=available)
    with storage.open_write(output, text=True) as out:
        for line in _non_empty_lines(inputs):
            if written < wanted and rng.random() * left < wanted - written:
                out.write(line + "\n")
                written += 1
            left -= 1
            progress.add()
        if left != 0:  # raised inside the write: no sample appears
            raise BadInput(f"{', '.join(inputs)}: changed while being read ({available} non-empty lines on the "
                           f"first pass, {available - left} on the second)")
    progress.done()
    return {"lines": written, "lines_available": available, "seconds": round(time.monotonic() - start, 3)}

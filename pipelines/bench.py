"""``bertja bench NAME``: dispatches to the benchmark that lives beside each step."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "tokenizer": "components.tokenizer.bench",
    "corpus-wiki": "components.corpus.bench",
    "pretraining-data": "components.pretraining_data.bench",
    "train": "components.train.bench",
    "train-torch": "components.torch_train.bench",
}


def main(argv: list[str], prog: str = "bertja bench") -> int:
    if not argv or argv[0] not in BENCHMARKS:
        print(f"usage: {prog} {{{'|'.join(BENCHMARKS)}}} [ARGS...]", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(BENCHMARKS[argv[0]])
    return int(module.main(argv[1:], prog=f"{prog} {argv[0]}") or 0)

"""``bertja split-words INPUT OUTPUT``: a shard's MeCab words, once for every variant."""

from __future__ import annotations

import argparse
import json

from components.mecab import KNOWN_DICTIONARIES
from components.words.split import split_words


def main(argv: list[str], prog: str = "bertja split-words") -> int:
    p = argparse.ArgumentParser(prog=prog, description=(
        "Splits a corpus shard into MeCab words (NFKC, not lowercased) as the wordpiece and character "
        "tokenizers do: one output line per input line, words joined by spaces, gzip; OUTPUT.meta.json "
        "beside it. 'bertja pretraining-data --words' and 'bertja tokenizer train --words' read it."))
    p.add_argument("input", metavar="INPUT", help="shard: sentence per line, blank line between documents "
                   "(plain, .gz or .xz; local path, file:// or gs://)")
    p.add_argument("output", metavar="OUTPUT", help="the word-split file to write (ends with .gz)")
    p.add_argument("--mecab-dic", default="unidic_lite",
                   help=f"one of {', '.join(KNOWN_DICTIONARIES)} or a dictionary directory (the tokenizer's)")
    p.add_argument("--workers", type=int, default=1, help="MeCab processes (output is the same for any number)")
    args = p.parse_args(argv)
    meta = split_words(args.input, args.output, mecab_dic=args.mecab_dic, workers=args.workers)
    print(json.dumps({**meta, "output": args.output}, ensure_ascii=False, indent=2))
    return 0

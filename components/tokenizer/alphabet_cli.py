"""``bertja alphabet LEX_CSV OUTPUT``: the initial alphabet from UniDic's lex.csv."""

from __future__ import annotations

import argparse
import json

from components.tokenizer.alphabet import build_alphabet


def main(argv: list[str], prog: str) -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Write the characters of UniDic lex.csv surface forms (NFKC, printable), "
                    "sorted by code point, one per line. Paths may be local, file:// or gs://.")
    parser.add_argument("lex_csv", help="UniDic lex.csv (.gz/.xz accepted)")
    parser.add_argument("output", help="alphabet file to write")
    args = parser.parse_args(argv)
    print(json.dumps(build_alphabet(args.lex_csv, args.output)))
    return 0

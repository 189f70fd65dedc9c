"""``bertja tokenizer train|character``: WordPiece and character tokenizers."""

from __future__ import annotations

import argparse
import json
import os

from components.tokenizer import files


def main(argv: list[str], prog: str) -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Train the WordPiece tokenizer on MeCab "
                                     "words, or cut the character tokenizer from it. Paths may be "
                                     "local, file:// or gs://.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="WordPiece on MeCab (unidic-lite) words",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                           description="Train WordPiece on MeCab words (NFKC, no lowercasing unless "
                                       "--do-lower-case) and write a BertJapaneseTokenizer directory.")
    train.add_argument("inputs", nargs="+", metavar="INPUT", help="corpus files, one sentence per line (.gz/.xz ok)")
    train.add_argument("--output-dir", required=True, help="tokenizer directory to write")
    train.add_argument("--vocab-size", type=int, default=32768, help="target vocabulary size")
    train.add_argument("--limit-alphabet", type=int, default=7012,
                       help="most characters the vocabulary keeps (0: no limit)")
    train.add_argument("--initial-alphabet", metavar="FILE", help="alphabet file from 'bertja alphabet'")
    train.add_argument("--num-unused", type=int, default=files.NUM_UNUSED, help="[unusedN] tokens")
    train.add_argument("--min-frequency", type=int, default=2, help="fewest occurrences of a merge")
    train.add_argument("--mecab-dic", default=files.DEFAULT_MECAB_DIC, help="unidic_lite, unidic or ipadic")
    train.add_argument("--do-lower-case", action="store_true", help="lowercase words (and say so in the config)")
    train.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="MeCab processes (this machine's cores)")

    char = sub.add_parser("character", help="character tokenizer = first SIZE WordPiece tokens",
                          description="Cut the character tokenizer (reserved tokens + alphabet) from a "
                                      "WordPiece tokenizer directory.")
    char.add_argument("wordpiece_dir", help="directory from 'bertja tokenizer train'")
    char.add_argument("output_dir", help="character tokenizer directory to write")
    char.add_argument("--size", type=int, default=7027,
                      help="vocabulary size (0: all leading reserved and single-character tokens)")

    args = parser.parse_args(argv)
    if args.command == "train":
        from components.tokenizer.wordpiece import train_wordpiece

        stats = train_wordpiece(
            args.inputs, args.output_dir, vocab_size=args.vocab_size,
            limit_alphabet=args.limit_alphabet or None, initial_alphabet=args.initial_alphabet,
            num_unused=args.num_unused, min_frequency=args.min_frequency, mecab_dic=args.mecab_dic,
            do_lower_case=args.do_lower_case, workers=args.workers)
    else:
        from components.tokenizer.character import make_character_tokenizer

        stats = make_character_tokenizer(args.wordpiece_dir, args.output_dir, size=args.size or None)
    print(json.dumps(stats))
    return 0

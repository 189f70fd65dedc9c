"""``bertja tokenizer train|character``: WordPiece, SentencePiece, byte and character tokenizers."""

from __future__ import annotations

import argparse
import json
import os

from components.tokenizer import files


def main(argv: list[str], prog: str) -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Train the WordPiece tokenizer on MeCab "
                                     "words or a SentencePiece unigram model, write the byte tokenizer, "
                                     "or cut the character tokenizer from WordPiece. Paths may be "
                                     "local, file:// or gs://.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="WordPiece on MeCab words, SentencePiece unigram, or bytes",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                           description="wordpiece: WordPiece on MeCab words (NFKC, no lowercasing unless "
                                       "--do-lower-case), a BertJapaneseTokenizer directory. sentencepiece: "
                                       "a unigram model and the tokenizer.json AutoTokenizer loads. byte: 256 "
                                       "bytes + specials (no corpus; --mecab-dic, or --word-splitter vibrato "
                                       "with --vibrato-dict, gives the words for whole-word masking; "
                                       "--mecab-dic none for none).")
    train.add_argument("inputs", nargs="*", metavar="INPUT", help="corpus files, one sentence per line (.gz/.xz ok)")
    train.add_argument("--type", default="wordpiece", choices=("wordpiece", "sentencepiece", "byte"),
                       help="tokenizer type")
    train.add_argument("--output-dir", required=True, help="tokenizer directory to write")
    train.add_argument("--vocab-size", type=int, default=32768, help="target vocabulary size")
    train.add_argument("--limit-alphabet", type=int, default=7012,
                       help="most characters the vocabulary keeps (0: no limit)")
    train.add_argument("--initial-alphabet", metavar="FILE", help="alphabet file from 'bertja alphabet'")
    train.add_argument("--num-unused", type=int, default=files.NUM_UNUSED, help="[unusedN] tokens")
    train.add_argument("--min-frequency", type=int, default=2, help="fewest occurrences of a merge")
    train.add_argument("--mecab-dic", default=files.DEFAULT_MECAB_DIC,
                       help="unidic_lite, unidic or ipadic (byte: also 'none')")
    train.add_argument("--word-splitter", default="mecab", choices=("mecab", "vibrato", "none"),
                       help="byte: what splits words for whole-word masking")
    train.add_argument("--vibrato-dict", metavar="DICT",
                       help="byte with --word-splitter vibrato: a system dictionary (.dic, .dic.zst) "
                            "or a text dictionary directory (lex.csv, matrix.def, char.def, unk.def)")
    train.add_argument("--words", action="store_true", help="wordpiece: INPUTs are MeCab words already "
                       "('bertja split-words' files or a line sample of them, split with --mecab-dic)")
    train.add_argument("--do-lower-case", action="store_true", help="lowercase words (and say so in the config)")
    train.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                       help="MeCab processes / SentencePiece threads (this machine's cores)")
    sp = train.add_argument_group("sentencepiece")
    sp.add_argument("--character-coverage", type=float, default=0.9995, help="share of characters kept")
    sp.add_argument("--byte-fallback", action="store_true", help="unknown characters as UTF-8 byte pieces")
    sp.add_argument("--split-digits", action="store_true", help="every digit its own piece")
    sp.add_argument("--control-symbols", type=_symbols, default=[],
                    help="comma-separated control pieces after [CLS],[SEP],[MASK]")
    sp.add_argument("--user-symbols", type=_symbols, default=[], help="comma-separated pieces kept whole in text")
    sp.add_argument("--normalization", default="nmt_nfkc", help="sentencepiece normalization rule")
    sp.add_argument("--input-sentence-size", type=int, default=0, help="lines sampled for training (0: all)")
    sp.add_argument("--seed", type=int, default=0, help="sentencepiece's random seed")

    char = sub.add_parser("character", help="character tokenizer = first SIZE WordPiece tokens",
                          description="Cut the character tokenizer (reserved tokens + alphabet) from a "
                                      "WordPiece tokenizer directory.")
    char.add_argument("wordpiece_dir", help="directory from 'bertja tokenizer train'")
    char.add_argument("output_dir", help="character tokenizer directory to write")
    char.add_argument("--size", type=int, default=7027,
                      help="vocabulary size (0: all leading reserved and single-character tokens)")

    args = parser.parse_args(argv)
    if args.command == "train" and args.type != "byte" and not args.inputs:
        parser.error(f"--type {args.type} needs INPUT files")
    if args.command == "train" and args.type == "byte":
        from components.tokenizer.byte import write_byte_tokenizer

        stats = write_byte_tokenizer(args.output_dir, mecab_dic=args.mecab_dic, word_splitter=args.word_splitter,
                                     vibrato_dict=args.vibrato_dict, do_lower_case=args.do_lower_case)
    elif args.command == "train" and args.type == "sentencepiece":
        from components.tokenizer.sentencepiece import train_sentencepiece

        stats = train_sentencepiece(
            args.inputs, args.output_dir, vocab_size=args.vocab_size, character_coverage=args.character_coverage,
            byte_fallback=args.byte_fallback, split_digits=args.split_digits,
            control_symbols=args.control_symbols, user_symbols=args.user_symbols,
            normalization=args.normalization, do_lower_case=args.do_lower_case,
            input_sentence_size=args.input_sentence_size, seed=args.seed, workers=args.workers)
    elif args.command == "train":
        from components.tokenizer.wordpiece import train_wordpiece

        stats = train_wordpiece(
            args.inputs, args.output_dir, vocab_size=args.vocab_size,
            limit_alphabet=args.limit_alphabet or None, initial_alphabet=args.initial_alphabet,
            num_unused=args.num_unused, min_frequency=args.min_frequency, mecab_dic=args.mecab_dic,
            do_lower_case=args.do_lower_case, workers=args.workers, words=args.words)
    else:
        from components.tokenizer.character import make_character_tokenizer

        stats = make_character_tokenizer(args.wordpiece_dir, args.output_dir, size=args.size or None)
    print(json.dumps(stats))
    return 0


def _symbols(text: str) -> list[str]:
    return [s for s in text.split(",") if s]

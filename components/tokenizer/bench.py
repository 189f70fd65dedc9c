"""``bertja bench tokenizer CORPUS``: WordPiece training time against the MeCab floor.

Runs ``bertja tokenizer train`` as a child process (wall time, peak RSS), one
bare fugashi pass over the same lines (the floor), and, unless ``--no-recipe``,
the recipe's way of training (a Python MeCab callback inside ``tokenizers``)
with the same settings, reporting its time and how many tokens both share.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from components import storage
from components.benchmark import bertja_argv, gib, mecab_floor_seconds, print_report, run_measured
from components.mecab import generic_tagger
from components.tokenizer import files
from components.tokenizer.alphabet import read_alphabet


class RecipeMecabCallback:
    """The recipe's pre-tokenizer: MeCab called from inside ``tokenizers`` on each normalized line.

    Each word is located after the whitespace MeCab skipped before it.
    """

    def __init__(self, mecab_dic: str = files.DEFAULT_MECAB_DIC):
        self.tagger = generic_tagger(mecab_dic)

    def words(self, _index, normalized):
        pieces, offset = [], 0
        for node in self.tagger(str(normalized)):
            offset += len(node.white_space)
            pieces.append(normalized[offset:offset + len(node.surface)])
            offset += len(node.surface)
        return pieces

    def pre_tokenize(self, pretok):
        pretok.split(self.words)


def recipe_tokenizer(mecab_dic: str = files.DEFAULT_MECAB_DIC):
    """A ``tokenizers`` WordPiece set up as the recipe's: NFKC + strip, MeCab callback."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    tokenizer = Tokenizer(models.WordPiece(unk_token=files.UNK_TOKEN))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Strip()])
    tokenizer.pre_tokenizer = pre_tokenizers.PreTokenizer.custom(RecipeMecabCallback(mecab_dic))
    return tokenizer


def recipe_vocabulary(tokenizer, corpus_path: str, *, vocab_size: int, limit_alphabet: int | None,
                      initial_alphabet: list[str], special_tokens: list[str]) -> list[str]:
    """Trains as the recipe does (callback pre-tokenizer over a local file); tokens by id."""
    from tokenizers import trainers

    # The trainer takes no limit as a missing argument, not as None.
    limit = {} if limit_alphabet is None else {"limit_alphabet": limit_alphabet}
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False, special_tokens=special_tokens,
        initial_alphabet=initial_alphabet, continuing_subword_prefix=files.CONTINUATION_PREFIX, **limit)
    tokenizer.train([corpus_path], trainer=trainer)
    return [t for t, _ in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])]


def _recipe_child(argv: list[str]) -> int:
    """``python -m components.tokenizer.bench CORPUS OUT VOCAB LIMIT [ALPHABET]`` (measured child)."""
    corpus, out, vocab_size, limit = argv[:4]
    initial = read_alphabet(argv[4]) if len(argv) > 4 else []
    tokens = recipe_vocabulary(recipe_tokenizer(), corpus, vocab_size=int(vocab_size),
                               limit_alphabet=int(limit) or None, initial_alphabet=initial,
                               special_tokens=files.reserved_tokens())
    storage.write_text(out, "".join(t + "\n" for t in tokens))
    return 0


def main(argv: list[str], prog: str) -> int:
    parser = argparse.ArgumentParser(prog=prog, description="WordPiece training (wall time, peak RSS, "
                                     "CPU seconds) against the MeCab floor and the recipe's callback training.")
    parser.add_argument("corpus", help="local corpus file, one sentence per line")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="MeCab processes (default: all cores)")
    parser.add_argument("--vocab-size", type=int, default=32768)
    parser.add_argument("--limit-alphabet", type=int, default=7012)
    parser.add_argument("--initial-alphabet", metavar="FILE")
    parser.add_argument("--no-recipe", action="store_true", help="skip the recipe's callback training")
    args = parser.parse_args(argv)

    with open(args.corpus, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f]
    size = os.path.getsize(args.corpus)
    with tempfile.TemporaryDirectory(prefix="bench-tokenizer-") as tmp:
        out = os.path.join(tmp, "wordpiece")
        cmd = ["tokenizer", "train", args.corpus, "--output-dir", out, "--vocab-size", str(args.vocab_size),
               "--limit-alphabet", str(args.limit_alphabet), "--workers", str(args.workers)]
        if args.initial_alphabet:
            cmd += ["--initial-alphabet", args.initial_alphabet]
        ours = run_measured(bertja_argv(*cmd))
        cpu_start = time.process_time()
        floor_s, n = mecab_floor_seconds(texts)
        floor_cpu_s = time.process_time() - cpu_start
        rows = {
            "corpus": f"{args.corpus} ({n:,} lines, {size / 1e6:.1f} MB)",
            "workers": args.workers,
            "ours wall s": ours["wall_s"],
            "ours peak RSS": gib(ours["peak_rss_bytes"]),
            "ours MB/s": size / 1e6 / ours["wall_s"],
            "MeCab floor s (1 process)": floor_s,
            "ours / floor": ours["wall_s"] / floor_s,
            "ours CPU s (all processes)": ours["cpu_s"],
            "MeCab floor CPU s": floor_cpu_s,
            "load average (1 min)": os.getloadavg()[0],
        }
        if not args.no_recipe:
            recipe_out = os.path.join(tmp, "recipe_vocab.txt")
            child = [sys.executable, "-m", "components.tokenizer.bench", args.corpus, recipe_out,
                     str(args.vocab_size), str(args.limit_alphabet)]
            if args.initial_alphabet:
                child.append(args.initial_alphabet)
            recipe = run_measured(child)
            ours_tokens = files.read_tokens(os.path.join(out, files.VOCAB_FILE))
            recipe_tokens = files.read_tokens(recipe_out)
            common = len(set(ours_tokens) & set(recipe_tokens))
            rows |= {
                "recipe (callback) wall s": recipe["wall_s"],
                "recipe peak RSS": gib(recipe["peak_rss_bytes"]),
                "recipe / floor": recipe["wall_s"] / floor_s,
                "recipe / ours": recipe["wall_s"] / ours["wall_s"],
                "recipe CPU s": recipe["cpu_s"],
                "vocab sizes ours/recipe": f"{len(ours_tokens)}/{len(recipe_tokens)}",
                "tokens in common": f"{common} ({100 * common / max(len(ours_tokens), 1):.2f}%; "
                                    "the rest are the recipe's hash-order tie-breaks)",
            }
    print_report("tokenizer: WordPiece training", rows)
    return 0


if __name__ == "__main__":
    sys.exit(_recipe_child(sys.argv[1:]))

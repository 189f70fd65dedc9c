"""WordPiece training on MeCab words (recipe step 7).

The recipe trains ``tokenizers``' WordPiece with a Python MeCab callback as its
pre-tokenizer, which runs single-core under the GIL. Here MeCab runs first, in
``workers`` processes, and writes each line's words, joined by single spaces, to
a local spill file; the trainer then reads that file splitting only at spaces
and newlines (MeCab words never contain an ASCII space: MeCab skips it). The
trainer counts the same words either way, so it learns the same vocabulary.

Two things the recipe leaves to hash order we fix, so that a given input always
gives the same vocabulary: which characters survive ``limit_alphabet`` when
counts tie (most frequent first, then lowest code point), and the ids of the
``##`` continuation forms, which break ties between equally frequent merges
(code-point order: the forms are passed to the trainer ahead of everything).
"""

from __future__ import annotations

import collections
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator

from components import storage
from components.errors import BadInput
from components.mecab import KNOWN_DICTIONARIES, WordSplitter
from components.parallel import ordered_map
from components.progress import Progress
from components.tokenizer import files
from components.tokenizer.alphabet import read_alphabet

CHUNK_LINES = 2000  # lines per task sent to a MeCab worker


class _ChunkSplitter:
    """Turns a chunk of lines into one-word-per-line text plus character statistics.

    Character counts (for ties at ``limit_alphabet``) are only taken when they
    can matter; otherwise each seen character counts 1.
    """

    def __init__(self, mecab_dic: str, do_lower_case: bool, count_chars: bool, words: bool = False):
        self.mecab_dic, self.do_lower_case, self.words = mecab_dic, do_lower_case, words
        self.split = self._split_words_line if words else WordSplitter(mecab_dic, do_lower_case)
        self.count_chars = count_chars

    def _split_words_line(self, line: str) -> list[str]:
        """A line of a word-split file (``components.words``): its words, lowercased if asked."""
        line = line.strip(" ")  # a line with no words is a single space
        if self.do_lower_case:
            line = line.lower()
        return line.split(" ") if line else []

    def __call__(self, lines: list[str]) -> tuple[str, collections.Counter, set[str], int]:
        split_lines = [words for words in map(self.split, lines) if words]
        text = "".join([" ".join(words) + "\n" for words in split_lines])
        n_words = sum(map(len, split_lines))
        if text.count(" ") != n_words - len(split_lines):  # the spill format's one assumption
            raise RuntimeError(f"a MeCab word contains an ASCII space in: {lines!r}")
        chars = collections.Counter(text) if self.count_chars else collections.Counter(set(text))
        del chars[" "], chars["\n"]
        non_initial = set("".join([w[1:] for words in split_lines for w in words]))
        return text, chars, non_initial, n_words


_worker_splitter: _ChunkSplitter | None = None


def _init_worker(*args) -> None:
    global _worker_splitter
    _worker_splitter = _ChunkSplitter(*args)


def _split_in_worker(lines: list[str]):
    return _worker_splitter(lines)


def _chunks(inputs: list[str], progress: Progress) -> Iterator[list[str]]:
    chunk: list[str] = []
    for uri in inputs:
        for _lineno, line in storage.iter_lines(uri):
            chunk.append(line)
            if len(chunk) == CHUNK_LINES:
                progress.add(len(chunk))
                yield chunk
                chunk = []
    if chunk:
        progress.add(len(chunk))
        yield chunk


def _split_chunks(chunks: Iterable[list[str]], splitter: _ChunkSplitter, workers: int) -> Iterator:
    """Each chunk's split result in input order, with ``workers`` MeCab processes."""
    if workers <= 1:
        return map(splitter, chunks)
    # spawn: the caller may hold threads (GCS client, tokenizers) that fork would copy mid-state.
    init = (splitter.mecab_dic, splitter.do_lower_case, splitter.count_chars, splitter.words)
    return ordered_map(_split_in_worker, chunks, workers=workers, initializer=_init_worker, initargs=init,
                       start_method="spawn")


def choose_alphabet(char_counts: collections.Counter, initial_alphabet: Iterable[str],
                    limit_alphabet: int | None) -> list[str]:
    """The trainer's alphabet, in code-point order.

    As ``tokenizers`` does: seen characters plus the initial alphabet, and if
    that exceeds ``limit_alphabet``, the initial alphabet first, then the most
    frequent; ties go to the lower code point (``tokenizers`` leaves them to
    hash order).
    """
    initial = set(initial_alphabet)
    candidates = initial | set(char_counts)
    if limit_alphabet is not None and len(candidates) > limit_alphabet:
        ranked = sorted(candidates, key=lambda c: (c not in initial, -char_counts.get(c, 0), ord(c)))
        candidates = set(ranked[:limit_alphabet])
    return sorted(candidates)


def train_wordpiece(inputs: list[str] | str, output_dir: str, *, vocab_size: int = 32768,
                    limit_alphabet: int | None = 7012, initial_alphabet: str | None = None,
                    num_unused: int = files.NUM_UNUSED, min_frequency: int = 2,
                    mecab_dic: str = files.DEFAULT_MECAB_DIC, do_lower_case: bool = False,
                    workers: int = 1, words: bool = False) -> dict:
    """Trains a WordPiece vocabulary on MeCab words of ``inputs`` and writes a tokenizer dir.

    ``words``: ``inputs`` are already MeCab words split with ``mecab_dic`` (word-split
    files of ``bertja split-words``, or a line sample of them): MeCab does not run.

    ``initial_alphabet`` is the URI of an alphabet file (``bertja alphabet``).
    Returns statistics: vocabulary size and make-up, lines and words seen,
    seconds spent splitting and training.
    """
    inputs = [inputs] if isinstance(inputs, str) else list(inputs)
    if not inputs:
        raise BadInput("inputs: no corpus files given")
    if mecab_dic not in KNOWN_DICTIONARIES:
        raise BadInput(f"mecab_dic={mecab_dic!r}: the tokenizer files must name a dictionary "
                       f"BertJapaneseTokenizer can load, one of {KNOWN_DICTIONARIES}")
    if min_frequency < 1:
        raise BadInput(f"min_frequency={min_frequency}: must be >= 1")
    if limit_alphabet is not None and limit_alphabet < 1:
        raise BadInput(f"limit_alphabet={limit_alphabet}: must be >= 1 (or None for no limit)")
    if workers < 1:
        raise BadInput(f"workers={workers}: must be >= 1")
    storage.check_outputs([*inputs, initial_alphabet], dirs=[output_dir])
    reserved = files.reserved_tokens(num_unused)
    initial = read_alphabet(initial_alphabet) if initial_alphabet else []
    least_alphabet = min(len(initial), limit_alphabet or len(initial))
    if vocab_size < len(reserved) + least_alphabet:
        raise BadInput(f"vocab_size={vocab_size}: smaller than the {len(reserved)} reserved tokens "
                       f"+ {least_alphabet} alphabet characters")
    for uri in inputs:  # fail before hours of MeCab, not after
        if not storage.exists(uri):
            raise BadInput(f"{uri}: no such corpus file")

    with tempfile.TemporaryDirectory(prefix="wordpiece-") as tmp:
        words_path = os.path.join(tmp, "words.txt")  # a line's words, space-separated
        start = time.monotonic()
        progress = Progress("tokenizer: " + ("words read" if words else "MeCab split"), "lines")
        char_counts: collections.Counter = collections.Counter()
        non_initial: set[str] = set()
        n_words = 0
        with open(words_path, "w", encoding="utf-8", newline="\n") as out:
            # With the recipe's settings (limit = initial alphabet size) counts cannot matter.
            count_chars = limit_alphabet is not None and limit_alphabet != len(set(initial))
            splitter = _ChunkSplitter(mecab_dic, do_lower_case, count_chars, words)
            for text, chars, non_init, n in _split_chunks(_chunks(inputs, progress), splitter, workers):
                out.write(text)
                char_counts.update(chars)
                non_initial |= non_init
                n_words += n
        n_lines = progress.count
        split_s = progress.done()
        if n_words == 0:
            raise BadInput(f"{', '.join(inputs)}: empty corpus (no words in {n_lines:,} lines)")

        alphabet = choose_alphabet(char_counts, initial, limit_alphabet)
        in_alphabet = set(alphabet)
        continuations = [files.CONTINUATION_PREFIX + c for c in alphabet if c in non_initial]
        fixed = len(reserved) + len(alphabet) + len(continuations)
        if vocab_size < len(reserved) + len(alphabet):
            raise BadInput(f"vocab_size={vocab_size}: smaller than the {len(reserved)} reserved tokens "
                           f"+ {len(alphabet)} alphabet characters")
        if vocab_size < fixed:  # as in the recipe: every form is kept, the vocabulary grows
            print(f"tokenizer: warning: vocab_size={vocab_size} is smaller than the {len(reserved)} "
                  f"reserved tokens + {len(alphabet)} alphabet characters + {len(continuations)} '##' "
                  f"forms this corpus needs; the vocabulary will have {fixed} tokens and no merged "
                  f"ones", file=sys.stderr, flush=True)

        print(f"tokenizer: training WordPiece on {n_words:,} words (alphabet {len(alphabet):,}, "
              f"{len(continuations):,} '##' forms, vocab_size {vocab_size:,})", file=sys.stderr, flush=True)
        train_start = time.monotonic()
        tokens = _train(words_path, reserved, continuations, alphabet, vocab_size, min_frequency)
        train_s = time.monotonic() - train_start
        print(f"tokenizer: trained {len(tokens):,} tokens in {train_s:.1f}s", file=sys.stderr, flush=True)

    files.write_tokenizer_dir(output_dir, tokens, subword_tokenizer_type="wordpiece",
                              do_lower_case=do_lower_case, mecab_dic=mecab_dic)
    storage.write_text(storage.join(output_dir, files.TOKENIZERS_JSON_FILE),
                       tokenizers_json(tokens, do_lower_case=do_lower_case))
    return {
        "vocab_size": len(tokens),
        "requested_vocab_size": vocab_size,
        "reserved_tokens": len(reserved),
        "alphabet_size": len(alphabet),
        "continuation_forms": len(continuations),
        "merged_tokens": len(tokens) - fixed,
        "characters_dropped": sum(1 for c in char_counts if c not in in_alphabet),
        "lines": n_lines,
        "words": n_words,
        "split_seconds": round(split_s, 3),
        "train_seconds": round(train_s, 3),
        "seconds": round(time.monotonic() - start, 3),
    }


def _train(words_path: str, reserved: list[str], continuations: list[str], alphabet: list[str],
           vocab_size: int, min_frequency: int) -> list[str]:
    """Runs the ``tokenizers`` trainer over the spilled words; returns the vocabulary layout.

    Layout: reserved tokens, alphabet (code-point order), ``##`` forms (code-point
    order), then merged tokens in the order the trainer made them.
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token=files.UNK_TOKEN))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("[ \n]"), behavior="removed")
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        show_progress=False,
        special_tokens=reserved + continuations,
        limit_alphabet=len(alphabet),
        initial_alphabet=alphabet,
        continuing_subword_prefix=files.CONTINUATION_PREFIX,
    )
    tokenizer.train([words_path], trainer=trainer)
    by_id = sorted(tokenizer.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
    head = set(reserved) | set(alphabet) | set(continuations)
    merged = [t for t, _i in by_id if t not in head]
    return reserved + alphabet + continuations + merged


def tokenizers_json(tokens: list[str], *, do_lower_case: bool = False) -> str:
    """A ``tokenizers`` JSON for the vocabulary that takes MeCab words joined by spaces.

    Kept beside the HF files for fast WordPiece over pre-split words; it is not
    named ``tokenizer.json`` so that ``AutoTokenizer`` loads BertJapaneseTokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate(tokens)}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token=files.UNK_TOKEN,
                                           max_input_chars_per_word=files.MAX_INPUT_CHARS_PER_WORD))
    steps = [normalizers.NFKC(), normalizers.Strip()]
    if do_lower_case:
        steps.append(normalizers.Lowercase())
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix=files.CONTINUATION_PREFIX)
    cls, sep = files.CLS_TOKEN, files.SEP_TOKEN
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, files.CLS_ID), (sep, files.SEP_ID)])
    tokenizer.add_special_tokens(list(files.SPECIAL_TOKENS))
    return json.dumps(json.loads(tokenizer.to_str()), ensure_ascii=False, indent=1) + "\n"

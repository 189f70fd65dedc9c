"""Text -> token codes, exactly as ``BertJapaneseTokenizer`` splits it.

A code is a token id with one extra bit, ``continuation``, set when the token
continues the previous token's word (a ``##`` WordPiece, or a non-initial
character in character mode). Whole-word masking needs only that bit, and the
documents can then be kept as one flat integer array.
"""

from __future__ import annotations

import unicodedata
from itertools import chain

import numpy as np

from components.errors import BadInput
from components.mecab import WordSplitter
from components.tokenizer import files

_CACHE_LIMIT = 100_000  # words (~20 MB at most); frequent words come early, so they are in it


def code_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned type that holds every id plus the continuation bit."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 15 else np.dtype(np.uint32)


def continuation_bit(vocab_size: int) -> int:
    return 1 << (code_dtype(vocab_size).itemsize * 8 - 1)


class PieceTokenizer:
    """MeCab words, then WordPiece (greedy longest match, ``##``) or characters.

    Picklable (worker processes rebuild the MeCab tagger). ``codes(line)``
    returns a list of codes; ``id = code & ~continuation``.
    """

    def __init__(self, vocab: files.TokenizerFiles, do_lower_case: bool | None = None):
        self.vocab = vocab
        self.do_lower_case = vocab.do_lower_case if do_lower_case is None else bool(do_lower_case)
        self.character = vocab.subword_tokenizer_type == "character"
        self.continuation = continuation_bit(len(vocab))
        self.dtype = code_dtype(len(vocab))
        self._words = WordSplitter(vocab.mecab_dic, self.do_lower_case)
        self._ids = vocab.vocab
        self._cache: dict[str, tuple[int, ...]] = {}

    def __getstate__(self):
        return {"vocab": self.vocab, "do_lower_case": self.do_lower_case}

    def __setstate__(self, state):
        self.__init__(**state)

    def codes(self, line: str) -> list[int]:
        out: list[int] = []
        self.extend_codes(out, line)
        return out

    def extend_codes(self, out, line: str) -> int:
        """Appends the line's codes to ``out`` (a list or array); returns how many."""
        words = self._words(line)
        cache = self._cache
        start = len(out)
        try:
            out.extend(chain.from_iterable(map(cache.__getitem__, words)))
        except KeyError:  # a word not seen yet: add the new words, then the same again
            del out[start:]
            pieces = {word: self._pieces(word) for word in words if word not in cache}
            lookup = cache.__getitem__ if len(cache) < _CACHE_LIMIT else (lambda w: pieces[w] if w in pieces else cache[w])
            out.extend(chain.from_iterable(map(lookup, words)))
        return len(out) - start

    def _pieces(self, word: str) -> tuple[int, ...]:
        pieces = self._characters(word) if self.character else self._wordpieces(word)
        if len(self._cache) < _CACHE_LIMIT:  # once full, the cache keeps the words that came first
            self._cache[word] = pieces
        return pieces

    def _wordpieces(self, word: str) -> tuple[int, ...]:
        ids, cont = self._ids, self.continuation
        out: list[int] = []
        for token in word.split():  # BertJapaneseTokenizer's whitespace_tokenize
            if len(token) > files.MAX_INPUT_CHARS_PER_WORD:
                out.append(files.UNK_ID)
                continue
            pieces: list[int] = []
            start = 0
            while start < len(token):
                end = len(token)
                found = None
                while start < end:
                    piece = token[start:end] if start == 0 else files.CONTINUATION_PREFIX + token[start:end]
                    found = ids.get(piece)
                    if found is not None:
                        break
                    end -= 1
                if found is None:
                    pieces = [files.UNK_ID]
                    break
                pieces.append(found | cont if start > 0 else found)
                start = end
            out.extend(pieces)
        return tuple(out)

    def _characters(self, word: str) -> tuple[int, ...]:
        # The recipe's character tokenizer: non-initial characters are "##c"
        # (looked up as "c"); an unknown character is [UNK] and starts a group.
        ids, cont = self._ids, self.continuation
        out = []
        for i, char in enumerate(unicodedata.normalize("NFKC", word)):
            found = ids.get(char)
            if found is None:
                out.append(files.UNK_ID)
            else:
                out.append(found | cont if i > 0 else found)
        return tuple(out)


def load_tokenizer(vocab_dir: str, do_lower_case: bool | None = None) -> PieceTokenizer:
    """Reads and checks a tokenizer directory before any work is done."""
    vocab = files.load_vocab(vocab_dir)
    if len(vocab) > 1 << 31:
        raise BadInput(f"{vocab_dir}: {len(vocab)} tokens is more than this step supports")
    return PieceTokenizer(vocab, do_lower_case)

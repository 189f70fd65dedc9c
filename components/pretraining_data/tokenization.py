"""Text -> token codes: as ``BertJapaneseTokenizer`` splits it, or as a directory's ``tokenizer.json`` does.

A code is a token id with one extra bit, ``continuation``, set when the token
continues the previous token's word (a ``##`` WordPiece, or a non-initial
character in character mode; for SentencePiece and byte tokenizers, a token
inside a MeCab word when the directory names a word splitter, else never).
Whole-word masking needs only that bit, and the documents can then be kept as
one flat integer array.
"""

from __future__ import annotations

import array
import unicodedata

import numpy as np

from components import storage
from components.errors import BadInput
from components.mecab import WordSplitter
from components.tokenizer import files

_CACHE_LIMIT = 100_000  # words (~15 MB at most); frequent words come early, so they are in it


def code_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned type that holds every id plus the continuation bit."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 15 else np.dtype(np.uint32)


def continuation_bit(vocab_size: int) -> int:
    return 1 << (code_dtype(vocab_size).itemsize * 8 - 1)


class _Codes:
    """What both tokenizers share: pickled by their arguments (workers rebuild the native parts)."""

    def __setstate__(self, state):
        self.__init__(**state)

    def codes(self, line: str) -> list[int]:
        out = array.array(np.dtype(self.dtype).char)
        self.extend_codes(out, line)
        return out.tolist()

    def line_bytes(self, line: str) -> bytes:
        """The line's codes as the bytes of an array of ``self.dtype``."""
        out = array.array(np.dtype(self.dtype).char)
        self.extend_codes(out, line)
        return out.tobytes()


class PieceTokenizer(_Codes):
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
        # Words as MeCab gives them; lowercased one word at a time when first seen (cache keys
        # are MeCab's words: a line is never lowercased, and a lowercased line splits the same).
        self._words = WordSplitter(vocab.mecab_dic, False)
        self._typecode = self.dtype.char
        self._ids = vocab.vocab
        self._longest = max(map(len, self._ids), default=0)  # no piece longer than this is in the vocabulary
        self._cache: dict[str, bytes] = {}

    @property
    def type(self) -> str:
        return self.vocab.subword_tokenizer_type

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __getstate__(self):
        return {"vocab": self.vocab, "do_lower_case": self.do_lower_case}

    def extend_codes(self, out, line: str) -> int:
        """Appends the line's codes to ``out`` (an ``array`` of ``self.dtype``, or a list); returns how many."""
        return self.extend_words(out, self._words(line))

    def line_bytes(self, line: str) -> bytes:
        """The line's codes as the bytes of an array of ``self.dtype`` (the data step's path: no array per line)."""
        return self.words_bytes(self._words(line))

    def words_line_bytes(self, line: str) -> bytes:
        """``line_bytes`` of a line of a word-split file (``components.words``: words as MeCab gives
        them, not lowercased, joined by single spaces)."""
        return self.words_bytes(line.split(" "))

    def words_bytes(self, words: list[str]) -> bytes:
        """The codes of a line already split into MeCab words (as MeCab gives them: not lowercased), as bytes.

        Each word's codes are cached as the bytes of its array, so a line is one
        ``bytes.join`` of cached values: no Python int per token.
        """
        cache = self._cache
        try:
            return b"".join(map(cache.__getitem__, words))
        except KeyError:  # a word not seen yet
            get = cache.get
            return b"".join([c if (c := get(w)) is not None else self._pieces(w) for w in words])

    def extend_words(self, out, words: list[str]) -> int:
        """As ``extend_codes`` for a line already split into MeCab words (as MeCab gives them: not lowercased)."""
        data = self.words_bytes(words)
        if isinstance(out, array.array):
            out.frombytes(data)
        else:
            out.extend(array.array(self._typecode, data))
        return len(data) // self.dtype.itemsize

    def _pieces(self, word: str) -> bytes:
        """The codes of a word not in the cache (lowercased first when ``do_lower_case``: per word
        as on the whole line, since a space ends the context of Greek final sigma, the only
        lowercasing that looks at neighbours)."""
        text = word.lower() if self.do_lower_case else word
        pieces = self._characters(text) if self.character else self._wordpieces(text)
        data = array.array(self._typecode, pieces).tobytes()
        if len(self._cache) < _CACHE_LIMIT:  # once full, the cache keeps the words that came first
            self._cache[word] = data
        return data

    def _wordpieces(self, word: str) -> tuple[int, ...]:
        ids, cont, longest = self._ids, self.continuation, self._longest
        out: list[int] = []
        for token in word.split():  # BertJapaneseTokenizer's whitespace_tokenize
            if len(token) > files.MAX_INPUT_CHARS_PER_WORD:
                out.append(files.UNK_ID)
                continue
            pieces: list[int] = []
            start = 0
            while start < len(token):
                end = min(len(token), start + longest)  # longer pieces cannot match: not looked up
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


class FastTokenizer(_Codes):
    """A SentencePiece or byte directory: its ``tokenizer.json`` (the ids AutoTokenizer gives).

    Words come from the directory's word splitter (``bertja_tokenizer.json``):
    a token continues a word when it starts inside one, or inside the same
    character as the token before it (the bytes of one character). With no
    word splitter every token is its own group. Same interface as PieceTokenizer.
    """

    def __init__(self, vocab_dir: str, info: dict, do_lower_case: bool | None = None):
        from tokenizers import Tokenizer

        self.vocab_dir, self.info = vocab_dir, info
        own = bool(info["do_lower_case"])
        if do_lower_case is not None and bool(do_lower_case) != own and own:
            raise BadInput(f"do_lower_case=False: {vocab_dir}'s tokenizer lowercases its input itself")
        self.do_lower_case = own if do_lower_case is None else bool(do_lower_case)
        self._lower_here = self.do_lower_case and not own
        self.type = info["type"]
        uri = storage.join(vocab_dir, files.FAST_TOKENIZER_FILE)
        try:
            self._tokenizer = Tokenizer.from_str(storage.read_text(uri))
        except Exception as e:  # tokenizers raises its own Exception type for bad JSON
            raise BadInput(f"{uri}: not a tokenizers tokenizer.json ({e})") from e
        self.vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)
        if self.vocab_size != info["vocab_size"]:
            raise BadInput(f"{uri}: {self.vocab_size} tokens, {files.BERTJA_TOKENIZER_FILE} says {info['vocab_size']}")
        self.continuation = continuation_bit(self.vocab_size)
        self.dtype = code_dtype(self.vocab_size)
        self._words = files.word_splitter_for(vocab_dir, info)

    def __getstate__(self):
        return {"vocab_dir": self.vocab_dir, "info": self.info, "do_lower_case": self.do_lower_case}

    def extend_codes(self, out, line: str) -> int:
        if self._lower_here:
            line = line.lower()
        encoding = self._tokenizer.encode(line, add_special_tokens=False)
        if self._words is None:
            out.extend(encoding.ids)
            return len(encoding.ids)
        starts = set(self._words.word_starts(line))
        cont, previous = self.continuation, -1
        for i, (token, (begin, _end)) in enumerate(zip(encoding.ids, encoding.offsets)):
            continues = i > 0 and (begin == previous or begin not in starts)
            out.append(token | cont if continues else token)
            previous = begin
        return len(encoding.ids)


def load_tokenizer(vocab_dir: str, do_lower_case: bool | None = None) -> PieceTokenizer | FastTokenizer:
    """Reads and checks a tokenizer directory before any work is done."""
    info = files.read_tokenizer_info(vocab_dir)
    if info["type"] not in files.SUBWORD_TYPES:
        return FastTokenizer(vocab_dir, info, do_lower_case)
    vocab = files.load_vocab(vocab_dir)
    if len(vocab) > 1 << 31:
        raise BadInput(f"{vocab_dir}: {len(vocab)} tokens is more than this step supports")
    return PieceTokenizer(vocab, do_lower_case)

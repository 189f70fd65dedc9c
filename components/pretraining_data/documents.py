"""A shard's documents as flat integer arrays, tokenized in worker processes.

The reference keeps every sentence as a list of token strings (~5 KiB per input
sentence). Here a document is a range of sentences and a sentence a range of one
flat array of token codes (2 bytes each for vocabularies up to 32768 tokens), so
memory is ~2 bytes per token plus 8 per sentence.
"""

from __future__ import annotations

import array
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from components import storage
from components.parallel import ordered_map
from components.errors import BadInput
from components.pretraining_data.tokenization import PieceTokenizer
from components.progress import Progress
from components.words.split import NO_WORDS, check_words_file, meta_uri, raw_chunks

BLANK = -1  # the per-line marker of a blank line in a tokenized chunk


@dataclass
class Documents:
    """Token codes of all sentences; sentence and document boundaries as end offsets."""

    codes: np.ndarray           # flat token codes (tokenization.PieceTokenizer)
    sentence_ends: np.ndarray   # int64, end offset in ``codes`` of each sentence
    document_ends: np.ndarray   # int64, end index in ``sentence_ends`` of each document

    def __len__(self) -> int:
        return len(self.document_ends)

    @property
    def num_sentences(self) -> int:
        return len(self.sentence_ends)

    @property
    def num_tokens(self) -> int:
        return len(self.codes)

    def nbytes(self) -> int:
        """Memory the documents take (what grows with the shard)."""
        return self.codes.nbytes + self.sentence_ends.nbytes + self.document_ends.nbytes


@dataclass
class ReadStats:
    input_lines: int = 0
    lines_without_tokens: int = 0


_TOKENIZER: PieceTokenizer | None = None


def _set_tokenizer(tokenizer: PieceTokenizer) -> None:
    global _TOKENIZER
    _TOKENIZER = tokenizer


def _decode_chunk(uri: str, first_lineno: int, lines: list[bytes]) -> list[str]:
    """The chunk's lines as text (one decode for all); bad UTF-8 is bad input naming its line."""
    try:
        text = b"".join(lines).decode("utf-8")
    except UnicodeDecodeError:
        for lineno, raw in enumerate(lines, first_lineno):
            storage.decode_line(uri, lineno, raw)
        raise
    decoded = text.split("\n")
    if not lines[-1].endswith(b"\n"):
        decoded.append("")  # the same count either way: the last item below is the split's tail
    return decoded[:-1]


def _tokenize_chunk(chunk: tuple[str, int, list[bytes], bool]) -> tuple[bytes, bytes]:
    """Codes of a chunk's lines, and one count (or BLANK) per line.

    Lines are text, or with ``words`` lines of a word-split file (``components.words``).
    """
    uri, first_lineno, lines, words = chunk
    tokenizer = _TOKENIZER
    itemsize = np.dtype(tokenizer.dtype).itemsize
    parts: list[bytes] = []
    counts = array.array("i")
    if words:
        words_line_bytes = tokenizer.words_line_bytes
        for line in _decode_chunk(uri, first_lineno, lines):
            if not line:
                counts.append(BLANK)
            elif line == NO_WORDS:  # a line with no words gives no tokens
                counts.append(0)
            else:
                parts.append(data := words_line_bytes(line))
                counts.append(len(data) // itemsize)
    else:
        line_bytes = tokenizer.line_bytes
        for line in _decode_chunk(uri, first_lineno, lines):
            if line := line.strip():
                parts.append(data := line_bytes(line))
                counts.append(len(data) // itemsize)
            else:
                counts.append(BLANK)
    return b"".join(parts), counts.tobytes()


def _chunks(input_uri: str, progress: Progress, words: bool) -> Iterator[tuple[str, int, list[bytes], bool]]:
    return ((uri, first, chunk, words) for uri, first, chunk in raw_chunks(input_uri, progress))


def read_documents(input_uri: str, tokenizer: PieceTokenizer, *, workers: int = 1,
                   words: bool = False) -> tuple[Documents, ReadStats]:
    """Reads and tokenizes a corpus shard (sentence per line, blank line between documents).

    A line that is not valid UTF-8 is bad input naming the line (as in every
    other step); lines that give no tokens are skipped like the reference does.
    ``words``: ``input_uri`` is the shard's word-split file (``bertja split-words``),
    checked against the tokenizer; MeCab does not run, the codes are the same.
    """
    if words:
        expected = check_words_file(input_uri, tokenizer)
    codes = array.array(np.dtype(tokenizer.dtype).char)
    sentence_ends: list[np.ndarray] = []
    document_ends: list[np.ndarray] = []
    stats = ReadStats()
    sentences = 0  # so far; a document is open while it exceeds the last document end
    last_end = 0
    progress = Progress("pretraining-data: tokenized", "lines")
    for chunk_codes, chunk_counts in ordered_map(_tokenize_chunk, _chunks(input_uri, progress, words), workers=workers,
                                                 initializer=_set_tokenizer, initargs=(tokenizer,)):
        start = len(codes)
        codes.frombytes(chunk_codes)
        counts = np.frombuffer(chunk_counts, dtype=np.int32)
        stats.input_lines += len(counts)
        stats.lines_without_tokens += int(np.count_nonzero(counts == 0))
        sentence_lengths = counts[counts > 0]
        sentence_ends.append(start + np.cumsum(sentence_lengths, dtype=np.int64))
        # A blank line ends the document open before it: the sentence count at each blank line,
        # kept where it grew since the last document end.
        before = sentences + np.cumsum(counts > 0)[counts == BLANK]
        ends = before[before > np.concatenate([[last_end], before[:-1]])]
        document_ends.append(ends)
        sentences += len(sentence_lengths)
        last_end = int(ends[-1]) if len(ends) else last_end
    if sentences > last_end:
        document_ends.append(np.array([sentences]))
    progress.done()
    if words and stats.input_lines != expected:
        raise BadInput(f"{input_uri}: {stats.input_lines} lines, its {storage.basename(meta_uri(input_uri))} "
                       f"says {expected} (not the file split-words wrote)")
    docs = Documents(
        codes=np.frombuffer(codes, dtype=tokenizer.dtype) if codes else np.zeros(0, tokenizer.dtype),
        sentence_ends=np.concatenate([np.zeros(0, np.int64), *sentence_ends]),
        document_ends=np.concatenate([np.zeros(0, np.int64), *document_ends]).astype(np.int64),
    )
    return docs, stats

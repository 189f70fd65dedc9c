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
from components.pretraining_data.tokenization import PieceTokenizer
from components.progress import Progress

CHUNK_LINES = 2000
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


def _tokenize_chunk(chunk: tuple[str, int, list[bytes]]) -> tuple[bytes, bytes]:
    """Codes of a chunk's lines, and one count (or BLANK) per line; bad UTF-8 is bad input."""
    uri, first_lineno, lines = chunk
    tokenizer = _TOKENIZER
    codes = array.array(np.dtype(tokenizer.dtype).char)
    counts = array.array("i")
    for lineno, raw in enumerate(lines, first_lineno):
        line = storage.decode_line(uri, lineno, raw).strip()
        if not line:
            counts.append(BLANK)
            continue
        counts.append(tokenizer.extend_codes(codes, line))
    return codes.tobytes(), counts.tobytes()


def _chunks(input_uri: str, progress: Progress) -> Iterator[tuple[str, int, list[bytes]]]:
    """``(uri, first line number, raw lines)``: the worker names a bad line exactly."""
    with storage.open_read(input_uri) as f:
        chunk: list[bytes] = []
        first = 1
        for lineno, raw in enumerate(f, 1):
            if not chunk:
                first = lineno
            chunk.append(raw)
            if len(chunk) >= CHUNK_LINES:
                progress.add(len(chunk))
                yield input_uri, first, chunk
                chunk = []
        if chunk:
            progress.add(len(chunk))
            yield input_uri, first, chunk


def read_documents(input_uri: str, tokenizer: PieceTokenizer, *, workers: int = 1) -> tuple[Documents, ReadStats]:
    """Reads and tokenizes a corpus shard (sentence per line, blank line between documents).

    A line that is not valid UTF-8 is bad input naming the line (as in every
    other step); lines that give no tokens are skipped like the reference does.
    """
    codes = array.array(np.dtype(tokenizer.dtype).char)
    sentence_ends = array.array("q")
    document_ends = array.array("q")
    stats = ReadStats()
    open_document = False
    progress = Progress("pretraining-data: tokenized", "lines")
    for chunk_codes, chunk_counts in ordered_map(_tokenize_chunk, _chunks(input_uri, progress), workers=workers,
                                                 initializer=_set_tokenizer, initargs=(tokenizer,)):
        end = len(codes)
        codes.frombytes(chunk_codes)
        counts = array.array("i")
        counts.frombytes(chunk_counts)
        for count in counts:
            stats.input_lines += 1
            if count > 0:
                end += count
                sentence_ends.append(end)
                open_document = True
            elif count == BLANK:
                if open_document:
                    document_ends.append(len(sentence_ends))
                    open_document = False
            else:
                stats.lines_without_tokens += 1
    if open_document:
        document_ends.append(len(sentence_ends))
    progress.done()
    docs = Documents(
        codes=np.frombuffer(codes, dtype=tokenizer.dtype) if codes else np.zeros(0, tokenizer.dtype),
        sentence_ends=np.frombuffer(sentence_ends, dtype=np.int64) if sentence_ends else np.zeros(0, np.int64),
        document_ends=np.frombuffer(document_ends, dtype=np.int64) if document_ends else np.zeros(0, np.int64),
    )
    return docs, stats

"""Tokenized shards: a corpus shard as token ids, for a trainer that masks and packs at load time.

The PyTorch trainer (SPEC 8) masks dynamically and packs sequences itself, so it
needs the text tokenized once, unmasked and without instances: one pass over
the shard, no ``dupe_factor``. Format (version 1), a directory::

    meta.json           {"format": "bertja-token-shards", "version": 1, "vocab_size", "dtype",
                         "tokens", "sentences", "documents", "tokenizer": {type, word_splitter,
                         mecab_dic, do_lower_case, special_token_ids}, "source", "input_lines"}
    tokens.npy          token ids, uint16 if vocab_size < 65536 else uint32: every sentence's
                        tokens back to back, no [CLS]/[SEP]/[PAD] (specials are the trainer's)
    word_starts.npy     bit-packed (numpy.packbits, big-endian bit order), one bit per token: 1 where
                        a word starts (whole-word masking groups a start with the tokens up to the
                        next start); all 1 when the tokenizer has no word splitter
    sentence_ends.npy   int64, end offset in tokens.npy of each sentence (exclusive)
    document_ends.npy   int64, end index in sentence_ends of each document (exclusive)

``.npy`` files load with ``numpy.load`` (memory-mapped when local); ``meta.json``
is written last, so a directory with it is complete. The tokens are exactly
what the tokenizer directory gives (``AutoTokenizer`` ids; for wordpiece and
character, BertJapaneseTokenizer's), as ``pretraining_data.tokenization`` makes
them for the TFRecords.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from components import storage
from components.errors import BadInput
from components.pretraining_data.documents import read_documents
from components.pretraining_data.tokenization import load_tokenizer
from components.tokenizer import files

FORMAT, VERSION = "bertja-token-shards", 1
META_FILE = "meta.json"
ARRAYS = ("tokens", "word_starts", "sentence_ends", "document_ends")


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size < 1 << 16 else np.dtype(np.uint32)


def write_token_shards(input_uri: str, output_uri: str, vocab_dir: str, *, workers: int = 1,
                       words: bool = False) -> dict:
    """Tokenizes one corpus shard (sentence per line, blank line between documents) into ``output_uri``/.

    ``words``: ``input_uri`` is the shard's word-split file (``bertja split-words``).
    Returns the ``meta.json`` content.
    """
    if workers < 1:
        raise BadInput(f"workers={workers}: must be >= 1")
    outputs = [storage.join(output_uri, f"{name}.npy") for name in ARRAYS] + [storage.join(output_uri, META_FILE)]
    storage.check_outputs([input_uri, vocab_dir], files=outputs)
    started = time.monotonic()
    tokenizer = load_tokenizer(vocab_dir)
    info = files.read_tokenizer_info(vocab_dir)
    docs, read = read_documents(input_uri, tokenizer, workers=workers, words=words)
    if not len(docs):
        raise BadInput(f"{input_uri}: no sentences with tokens ({read.input_lines} lines read); "
                       "an empty shard gives no token shards")
    codes = docs.codes
    continuing = codes >= codes.dtype.type(tokenizer.continuation)
    dtype = token_dtype(tokenizer.vocab_size)
    arrays = {
        "tokens": (codes & codes.dtype.type(tokenizer.continuation - 1)).astype(dtype),
        "word_starts": np.packbits(~continuing),
        "sentence_ends": docs.sentence_ends.astype(np.int64),
        "document_ends": docs.document_ends.astype(np.int64),
    }
    meta = {
        "format": FORMAT, "version": VERSION, "vocab_size": tokenizer.vocab_size, "dtype": dtype.name,
        "tokens": int(len(codes)), "sentences": docs.num_sentences, "documents": len(docs),
        "tokenizer": {k: info[k] for k in ("type", "word_splitter", "mecab_dic", "special_token_ids")}
        | {"do_lower_case": tokenizer.do_lower_case},
        "source": input_uri, "input_lines": read.input_lines, "lines_without_tokens": read.lines_without_tokens,
        "word_starts": int((~continuing).sum()), "seconds": round(time.monotonic() - started, 3),
    }
    save_token_arrays(output_uri, arrays, meta)
    return meta


def save_token_arrays(output_uri: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Writes the format's arrays (``word_starts`` already packed) and then ``meta.json``, which
    marks the directory complete. ``write_token_shards`` uses it; so do synthetic corpora (the
    trainer's benchmark and memory test), which have ids but no text."""
    for name in ARRAYS:
        buffer = io.BytesIO()
        np.save(buffer, arrays[name], allow_pickle=False)
        storage.write_bytes(storage.join(output_uri, f"{name}.npy"), buffer.getvalue())
    storage.write_text(storage.join(output_uri, META_FILE), json.dumps(meta, ensure_ascii=False, indent=2) + "\n")


@dataclass
class TokenShards:
    """One shard read back: the arrays of the format above (``word_starts`` unpacked to bool by
    ``read_token_shards``, still bit-packed from ``map_token_shards``)."""

    meta: dict
    tokens: np.ndarray
    word_starts: np.ndarray
    sentence_ends: np.ndarray
    document_ends: np.ndarray

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def tokenizer_type(self) -> str:
        return self.meta["tokenizer"]["type"]

    def __len__(self) -> int:
        return len(self.document_ends)

    def _sentence_span(self, doc: int) -> tuple[int, int]:
        first = int(self.document_ends[doc - 1]) if doc else 0
        last = int(self.document_ends[doc])
        start = int(self.sentence_ends[first - 1]) if first else 0
        return start, int(self.sentence_ends[last - 1])

    def document(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Document ``i``'s (token ids, word-start marks)."""
        start, end = self._sentence_span(i)
        return self.tokens[start:end], self.word_starts[start:end]

    def iter_documents(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(len(self)):
            yield self.document(i)

    def sentences(self, i: int) -> list[np.ndarray]:
        """Document ``i``'s sentences as token id arrays."""
        first = int(self.document_ends[i - 1]) if i else 0
        ends = self.sentence_ends[first:int(self.document_ends[i])].tolist()
        starts = [int(self.sentence_ends[first - 1]) if first else 0, *ends[:-1]]
        return [self.tokens[s:e] for s, e in zip(starts, ends)]


def _load(uri: str, name: str, spool: str | None = None) -> np.ndarray:
    """``name``.npy of the shard at ``uri``: memory-mapped when local; from GCS, read into memory,
    or with ``spool`` (a local directory) copied there first and memory-mapped from the copy."""
    path = storage.join(uri, f"{name}.npy")
    try:
        if storage.is_gcs(path) and spool is None:
            return np.load(io.BytesIO(storage.read_bytes(path)), allow_pickle=False)
        if storage.is_gcs(path):
            local = os.path.join(spool, f"{name}.npy")
            storage.copy(path, local)
            path = local
        return np.load(storage.local_path(path), mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise BadInput(f"{path}: not a token-shards array ({e})") from e


def _read_checked(uri: str, spool: str | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """``meta.json`` and the arrays (``word_starts`` still bit-packed), checked against each other."""
    meta_uri = storage.join(uri, META_FILE)
    if not storage.exists(meta_uri):
        raise BadInput(f"{uri}: no {META_FILE} (not token shards, or not completely written)")
    meta = storage.read_json_object(meta_uri)
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise BadInput(f"{meta_uri}: format {meta.get('format')!r} version {meta.get('version')!r}; "
                       f"this reader reads {FORMAT!r} version {VERSION}")
    arrays = {name: _load(uri, name, spool) for name in ARRAYS}
    n = int(meta["tokens"])
    tokens = arrays["tokens"]
    if len(tokens) != n or tokens.dtype != np.dtype(meta["dtype"]):
        raise BadInput(f"{uri}: tokens.npy holds {len(tokens)} {tokens.dtype}, {META_FILE} says {n} {meta['dtype']}")
    if (len(arrays["sentence_ends"]) != meta["sentences"] or len(arrays["document_ends"]) != meta["documents"]
            or (n and int(arrays["sentence_ends"][-1]) != n)):
        raise BadInput(f"{uri}: sentence/document ends disagree with {META_FILE}")
    if len(arrays["word_starts"]) != (n + 7) // 8 or arrays["word_starts"].dtype != np.uint8:
        raise BadInput(f"{uri}: word_starts.npy holds {len(arrays['word_starts'])} {arrays['word_starts'].dtype}, "
                       f"expected {(n + 7) // 8} uint8 (one bit per token)")
    return meta, arrays


def read_token_shards(uri: str) -> TokenShards:
    """Reads (memory-maps, when local) a directory ``write_token_shards`` wrote, checking it is whole.
    The word-start marks are unpacked into memory (one byte per token): for a whole corpus that
    must not be in memory, ``map_token_shards``."""
    meta, arrays = _read_checked(uri)
    starts = np.unpackbits(np.asarray(arrays["word_starts"]), count=int(meta["tokens"])).astype(bool)
    return TokenShards(meta=meta, tokens=arrays["tokens"], word_starts=starts, sentence_ends=arrays["sentence_ends"],
                       document_ends=arrays["document_ends"])


def map_token_shards(uri: str, spool: str | None = None) -> TokenShards:
    """Like ``read_token_shards``, but nothing proportional to the tokens is read into memory:
    ``tokens`` and ``word_starts`` stay memory-mapped, and ``word_starts`` stays bit-packed
    (``numpy.unpackbits`` the slice you need). A GCS shard is copied into the local directory
    ``spool`` first (required for gs://: memory maps need a local file)."""
    if storage.is_gcs(uri) and not spool:
        raise BadInput(f"{uri}: a GCS shard is memory-mapped from a local copy; no spool directory given")
    meta, arrays = _read_checked(uri, spool)
    return TokenShards(meta=meta, tokens=arrays["tokens"], word_starts=arrays["word_starts"],
                       sentence_ends=arrays["sentence_ends"], document_ends=arrays["document_ends"])

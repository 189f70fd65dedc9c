"""``tf.train.Example`` records and GZIP TFRecord files, written without TensorFlow.

An Example with only int64/float lists has a simple protobuf layout (map entries
of Int64List/FloatList with packed values), so a whole batch is encoded with
numpy: table lookups for varints and headers, one boolean index to join them.
Files are TFRecord framing (length, masked CRC32C of the length, data, masked
CRC32C of the data) in one GZIP member, compressed in parts where the records
are made (``deflate_records``) and joined by the writer: what ``tf.data.TFRecordDataset(...,
compression_type="GZIP")`` and Model Garden's ``tfrecord_compressed`` read.
"""

from __future__ import annotations

import contextlib
import functools
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from isal import isal_zlib

from components import storage
from components.pretraining_data.instances import Batch
from components.tfrecord import framed_join

FLOAT_FEATURES = {"masked_lm_weights"}
GZIP_LEVEL = 1  # ISA-L's fast level: zlib level 1's ratio at ~7x its speed


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


@functools.lru_cache(maxsize=8)
def _varint_table(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Varints of 0..size-1 packed little-endian into one integer each (zero-padded),
    a same-shaped integer whose bytes are 1 where the varint's bytes are real, and their lengths.

    One scalar lookup per value then gives a row of bytes (a view), far cheaper
    than gathering byte rows.
    """
    values = np.arange(max(size, 1), dtype=np.uint64)
    lengths = np.ones(len(values), dtype=np.int64)
    while (more := values >> np.uint64(7 * int(lengths[-1])) > 0).any():
        lengths += more
    widest = int(lengths[-1])  # the narrowest integer that holds it: fewer padding bytes to drop later
    packed = np.zeros(len(values), dtype=np.uint64)
    real = np.zeros(len(values), dtype=np.uint64)
    for b in range(widest):
        present = (lengths > b).astype(np.uint64)
        continued = (lengths > b + 1).astype(np.uint64)
        byte = ((values >> np.uint64(7 * b)) & np.uint64(0x7F)) | (continued << np.uint64(7))
        packed |= (byte * present) << np.uint64(8 * b)
        real |= present << np.uint64(8 * b)
    dtype = np.dtype("<u1" if widest == 1 else "<u2" if widest == 2 else "<u4" if widest <= 4 else "<u8")
    return packed.astype(dtype), real.astype(dtype), lengths


@functools.lru_cache(maxsize=64)
def _feature_header(name: str, payload_len: int) -> bytes:
    """The bytes of a ``Features.feature`` map entry up to its packed values."""
    key = name.encode()
    value_list = b"\x0a" + _varint(payload_len)  # Int64List/FloatList.value (field 1), packed
    tag = b"\x12" if name in FLOAT_FEATURES else b"\x1a"  # Feature.float_list = 2, .int64_list = 3
    feature = tag + _varint(len(value_list) + payload_len) + value_list
    feature_len = len(feature) + payload_len
    entry_head = b"\x0a" + _varint(len(key)) + key + b"\x12" + _varint(feature_len)
    return b"\x0a" + _varint(len(entry_head) + feature_len) + entry_head + feature


@functools.lru_cache(maxsize=16)
def _headers(name: str, max_payload: int) -> tuple[list[bytes], np.ndarray]:
    """``_feature_header`` for every payload length up to ``max_payload`` (a list: one index per
    record), and each one's length plus the payload's (an array: the record's length in numpy)."""
    headers = [_feature_header(name, p) for p in range(max_payload + 1)]
    return headers, np.array([len(h) for h in headers]) + np.arange(max_payload + 1)


def _varint_rows(name: str, values: np.ndarray, size: int) -> tuple[Iterator[bytes], Iterator[bytes], np.ndarray]:
    """An int64 feature with values in [0, size): each row's header and its values' varints (both
    as iterators over the rows, made by C-level maps), and each row's whole feature length."""
    packed, real, nbytes = _varint_table(size)
    n, k = values.shape
    headers, feature_lengths = _headers(name, k * int(nbytes[-1]))
    if packed.itemsize == 1:  # every varint is one byte: no padding to drop
        payload = np.full(n, k)
        data = values.astype(np.uint8).tobytes()
    else:
        # np.compress on flat arrays: ~3x faster than a boolean index here
        data = np.compress(real[values].view(bool).ravel(), packed[values].view(np.uint8).ravel()).tobytes()
        payload = nbytes[values].sum(axis=1)
    ends = np.cumsum(payload)
    rows = map(data.__getitem__, map(slice, (ends - payload).tolist(), ends.tolist()))
    return map(headers.__getitem__, payload.tolist()), rows, feature_lengths[payload]


class _Templates:
    """The features that take few values, as byte strings made once per value and then looked up:
    ``input_type_ids`` + ``input_mask`` by (segment A, length), ``masked_lm_weights`` +
    ``next_sentence_labels`` by (masked count, label); each keyed by one int."""

    MIDDLE_CACHE_BYTES = 16 << 20  # at seq 512 the (segment A, length) pairs are many: memory stays flat

    def __init__(self, width: int, predictions: int, next_sentence_prediction: bool):
        self.width, self.predictions, self.nsp = width, predictions, next_sentence_prediction
        self.middle: dict[int, bytes] = {}  # [segment_a * (width + 1) + length]
        self.middle_limit = self.MIDDLE_CACHE_BYTES // (2 * width + 16)
        self.tail: list[bytes | None] = [None] * (predictions + 1) * 2  # [count * 2 + label]

    def _make_middle(self, key: int) -> bytes:
        width = self.width
        a, length = divmod(key, width + 1)
        pad = bytes(width - length)
        return b"".join((_feature_header("input_type_ids", width), bytes(a) + b"\x01" * (length - a) + pad,
                         _feature_header("input_mask", width), b"\x01" * length + pad))

    def middles(self, segment_a: np.ndarray, lengths: np.ndarray) -> list[bytes]:
        keys = (segment_a * (self.width + 1) + lengths).tolist()
        table = self.middle
        missing = set(keys).difference(table)
        if not missing:
            return list(map(table.__getitem__, keys))
        made = {key: self._make_middle(key) for key in missing}
        room = self.middle_limit - len(table)
        if len(made) <= room:
            table.update(made)
            return list(map(table.__getitem__, keys))
        for key in list(made)[:max(0, room)]:
            table[key] = made[key]  # the first values seen stay cached
        get = table.get
        return [get(key) or made[key] for key in keys]

    def tails(self, counts: np.ndarray, random_next: np.ndarray) -> list[bytes]:
        keys = (counts * 2 + random_next).tolist()
        table = self.tail
        for key in set(keys):
            if table[key] is None:
                count, label = divmod(key, 2)
                weights = (np.arange(self.predictions) < count).astype("<f4").tobytes()
                value = _feature_header("masked_lm_weights", len(weights)) + weights
                if self.nsp:
                    value += _feature_header("next_sentence_labels", 1) + bytes((label,))
                table[key] = value
        return list(map(table.__getitem__, keys))


@functools.lru_cache(maxsize=16)
def _templates(width: int, predictions: int, next_sentence_prediction: bool) -> _Templates:
    return _Templates(width, predictions, next_sentence_prediction)


class _ExampleHeaders(list):
    """``Example.features``' tag and length varint, by body length (a list grown on demand)."""

    def upto(self, length: int) -> "_ExampleHeaders":
        self.extend(b"\x0a" + _varint(n) for n in range(len(self), length + 1))
        return self


_EXAMPLE_HEADERS = _ExampleHeaders()


def batch_examples(batch: Batch, vocab_size: int, next_sentence_prediction: bool = True) -> list[bytes]:
    """The serialized ``tf.train.Example`` of each instance of a batch, in order (MLM only: no
    ``next_sentence_labels``).

    The varints (token ids, masked positions and ids) are made for the whole
    batch with numpy, and so is each record's length; the rest of a record is a
    few byte strings looked up (headers by payload length, ``_Templates``), and
    each record is one join of its pieces.
    """
    width = batch.input_ids.shape[1]
    templates = _templates(width, batch.masked_positions.shape[1], bool(next_sentence_prediction))
    ids_headers, ids, ids_lengths = _varint_rows("input_word_ids", batch.input_ids, vocab_size)
    positions_headers, positions, positions_lengths = _varint_rows("masked_lm_positions", batch.masked_positions, width)
    labels_headers, labels, labels_lengths = _varint_rows("masked_lm_ids", batch.masked_ids, vocab_size)
    middles = templates.middles(batch.segment_a, batch.lengths)
    tails = templates.tails(batch.masked_counts, batch.random_next)
    bodies = ids_lengths + positions_lengths + labels_lengths + (len(middles[0]) + len(tails[0]) if middles else 0)
    example_headers = map(_EXAMPLE_HEADERS.upto(int(bodies.max(initial=0))).__getitem__, bodies.tolist())
    # No Python code runs per record: maps and zip over C functions, one join per record.
    return list(map(b"".join, zip(example_headers, ids_headers, ids, middles, positions_headers, positions,
                                  labels_headers, labels, tails)))


@dataclass(frozen=True)
class DeflatedPart:
    """Records, framed and compressed on their own (raw deflate, ending byte-aligned on a full flush),
    with what the GZIP trailer needs of them: their CRC-32 and length, uncompressed."""

    data: bytes
    crc: int
    size: int
    records: int


def deflate_records(records: list[bytes]) -> DeflatedPart:
    """Records (serialized Examples), framed, as one ``DeflatedPart``: parts made anywhere (worker processes) join into
    one GZIP member in any writer, the way pigz joins its blocks, so the file's bytes do not
    depend on which process compressed what."""
    data = framed_join(records)
    deflate = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, -15)  # -15: raw deflate, no container
    return DeflatedPart(deflate.compress(data) + deflate.flush(isal_zlib.Z_FULL_FLUSH), isal_zlib.crc32(data),
                        len(data), len(records))


_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, no mtime, OS unknown
_FINAL_BLOCK = b"\x03\x00"  # an empty final block (fixed Huffman): ends the deflate stream


class GzipRecordWriter:
    """One GZIP member made of ``DeflatedPart``s, in the order written."""

    def __init__(self, stream):
        self._stream = stream
        self._crc = 0
        self._size = 0
        self.records = 0
        stream.write(_GZIP_HEADER)

    def write(self, part: DeflatedPart) -> None:
        self._stream.write(part.data)
        self._crc = isal_zlib.crc32_combine(self._crc, part.crc, part.size)
        self._size += part.size
        self.records += part.records

    def write_many(self, records: list[bytes]) -> None:
        self.write(deflate_records(records))

    def finish(self) -> None:
        self._stream.write(_FINAL_BLOCK + struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))


@contextlib.contextmanager
def open_gzip_records(uri: str) -> Iterator[GzipRecordWriter]:
    with storage.open_write(uri, compress=False) as stream:
        writer = GzipRecordWriter(stream)
        yield writer
        writer.finish()

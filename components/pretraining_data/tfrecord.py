"""``tf.train.Example`` records and GZIP TFRecord files, written without TensorFlow.

An Example with only int64/float lists has a simple protobuf layout (map entries
of Int64List/FloatList with packed values), so a whole batch is encoded with
numpy: table lookups for varints and headers, one boolean index to join them.
Files are TFRecord framing (length, masked CRC32C of the length, data, masked
CRC32C of the data) in a GZIP stream, what ``tf.data.TFRecordDataset(...,
compression_type="GZIP")`` and Model Garden's ``tfrecord_compressed`` read.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import numpy as np
from isal import isal_zlib

from components import storage
from components.pretraining_data.instances import Batch
from components.tfrecord import frame

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
    encoded = [_varint(v) for v in range(size)]
    widest = len(encoded[-1])  # the narrowest integer that holds it: fewer padding bytes to drop later
    dtype = np.dtype("<u1" if widest == 1 else "<u2" if widest == 2 else "<u4" if widest <= 4 else "<u8")
    packed = np.array([int.from_bytes(e, "little") for e in encoded], dtype=dtype)
    real = np.array([int.from_bytes(b"\x01" * len(e), "little") for e in encoded], dtype=dtype)
    return packed, real, np.array([len(e) for e in encoded])


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


@functools.lru_cache(maxsize=8)
def _header_table(name: str, max_payload: int) -> tuple[np.ndarray, np.ndarray]:
    """``_feature_header`` for every payload length up to ``max_payload``, as padded rows + real-byte mask."""
    headers = [_feature_header(name, p) for p in range(max_payload + 1)]
    width = max(map(len, headers))
    table = np.zeros((len(headers), width), dtype=np.uint8)
    for p, header in enumerate(headers):
        table[p, :len(header)] = np.frombuffer(header, dtype=np.uint8)
    lengths = np.array([len(h) for h in headers])
    return table, np.arange(width)[None, :] < lengths[:, None]


class _Rows:
    """Each record as a fixed-width row of bytes plus a mask of the bytes that are real.

    Varints and headers have variable length; padding them to a fixed width and
    dropping the padding with one boolean index keeps all of the work in numpy.
    """

    def __init__(self, n: int):
        self.n = n
        self.parts: list[np.ndarray] = []
        self.real: list[np.ndarray] = []
        self.lengths = np.zeros(n, dtype=np.int64)  # real bytes so far, per row

    def _add(self, part: np.ndarray, real: np.ndarray | None = None, lengths=None) -> None:
        self.parts.append(part)
        self.real.append(np.ones(part.shape, dtype=bool) if real is None else real)
        self.lengths += part.shape[1] if lengths is None else lengths

    def constant(self, data: bytes) -> None:
        row = np.frombuffer(data, dtype=np.uint8)
        self._add(np.broadcast_to(row, (self.n, len(row))))

    def fixed(self, name: str, payload: np.ndarray) -> None:
        """A feature whose packed values have the same length in every record."""
        self.constant(_feature_header(name, payload.shape[1]))
        self._add(payload)

    def varint(self, name: str, values: np.ndarray, size: int) -> None:
        """An int64 feature with values in [0, size)."""
        packed, real, nbytes = _varint_table(size)
        payload_len = nbytes[values].sum(axis=1)
        header, header_real = _header_table(name, values.shape[1] * packed.itemsize)
        self._add(header[payload_len], header_real[payload_len], header_real[payload_len].sum(axis=1))
        self._add(packed[values].view(np.uint8), real[values].view(bool), payload_len)

    def finish(self) -> tuple[bytes, np.ndarray]:
        """All records back to back (each a serialized Example), and each record's length."""
        packed, real, nbytes = _varint_table(sum(p.shape[1] for p in self.parts) + 1)
        lengths = self.lengths
        # Example.features (field 1), length-delimited, then the feature map entries.
        body = np.concatenate([np.full((self.n, 1), 0x0A, dtype=np.uint8),
                               packed[lengths].view(np.uint8).reshape(self.n, -1), *self.parts], axis=1)
        keep = np.concatenate([np.ones((self.n, 1), dtype=bool),
                               real[lengths].view(bool).reshape(self.n, -1), *self.real], axis=1)
        return body[keep].tobytes(), 1 + nbytes[lengths] + lengths


def batch_records(batch: Batch, vocab_size: int, next_sentence_prediction: bool = True) -> list[bytes]:
    """The framed TFRecord of each instance of a batch, in order (MLM only: no ``next_sentence_labels``)."""
    n, width = batch.input_ids.shape
    predictions = batch.masked_positions.shape[1]
    col = np.arange(width)[None, :]
    lengths = batch.lengths[:, None]
    rows = _Rows(n)
    rows.varint("input_word_ids", batch.input_ids, vocab_size)
    rows.fixed("input_type_ids", ((col >= batch.segment_a[:, None]) & (col < lengths)).astype(np.uint8))
    rows.fixed("input_mask", (col < lengths).astype(np.uint8))
    rows.varint("masked_lm_positions", batch.masked_positions, width)
    rows.varint("masked_lm_ids", batch.masked_ids, vocab_size)
    weights = (np.arange(predictions)[None, :] < batch.masked_counts[:, None]).astype("<f4")
    rows.fixed("masked_lm_weights", weights.view(np.uint8).reshape(n, 4 * predictions))
    if next_sentence_prediction:
        rows.fixed("next_sentence_labels", batch.random_next.astype(np.uint8)[:, None])
    data, record_lengths = rows.finish()
    ends = np.cumsum(record_lengths).tolist()
    return [frame(data[start:end]) for start, end in zip([0, *ends[:-1]], ends)]


class GzipRecordWriter:
    """Appends framed records to one GZIP stream (ISA-L deflate, compressed ~1 MB at a time)."""

    FLUSH_BYTES = 1 << 20

    def __init__(self, stream):
        self._stream = stream
        self._deflate = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, 31)  # 31: gzip container
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self.records = 0

    def write_many(self, records: list[bytes]) -> None:
        self._pending += records
        self._pending_bytes += sum(map(len, records))
        self.records += len(records)
        if self._pending_bytes >= self.FLUSH_BYTES:
            self._compress()

    def _compress(self) -> None:
        self._stream.write(self._deflate.compress(b"".join(self._pending)))
        self._pending, self._pending_bytes = [], 0

    def finish(self) -> None:
        self._compress()
        self._stream.write(self._deflate.flush())


@contextlib.contextmanager
def open_gzip_records(uri: str) -> Iterator[GzipRecordWriter]:
    with storage.open_write(uri, compress=False) as stream:
        writer = GzipRecordWriter(stream)
        yield writer
        writer.finish()

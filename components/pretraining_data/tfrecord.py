"""``tf.train.Example`` records and GZIP TFRecord files, written without TensorFlow.

An Example with only int64/float lists has a simple protobuf layout, so a batch
is encoded with numpy (varints for all rows at once) and each record is a join
of a few precomputed headers and slices. Files are TFRecord framing (length,
masked CRC32C of the length, data, masked CRC32C of the data) in a GZIP stream,
what ``tf.data.TFRecordDataset(..., compression_type="GZIP")`` reads.
"""

from __future__ import annotations

import contextlib
import struct
import zlib
from collections.abc import Iterator

import google_crc32c
import numpy as np

from components import storage
from components.pretraining_data.instances import Batch

# Model Garden's v2 feature names (official/nlp/data/pretrain_dataloader.py),
# in the order the reference writes them.
FEATURES = ("input_word_ids", "input_type_ids", "input_mask", "masked_lm_positions",
            "masked_lm_ids", "masked_lm_weights", "next_sentence_labels")
FLOAT_FEATURES = {"masked_lm_weights"}
GZIP_LEVEL = 1  # fast; any level is valid GZIP


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


def varints(values: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Packed varint encoding of each row of a 2-D array of non-negative ints.

    Returns all rows' bytes back to back and each row's byte length.
    """
    v = np.ascontiguousarray(values, dtype=np.uint64).ravel()
    nbytes = np.ones(v.shape, dtype=np.int64)
    for k in range(1, 10):
        more = (v >> np.uint64(7 * k)) != 0
        if not more.any():
            break
        nbytes += more
    offsets = np.cumsum(nbytes) - nbytes
    out = np.empty(int(nbytes.sum()), dtype=np.uint8)
    for k in range(int(nbytes.max(initial=1))):
        sel = nbytes > k
        byte = (v[sel] >> np.uint64(7 * k)) & np.uint64(0x7F)
        byte |= np.where(nbytes[sel] > k + 1, np.uint64(0x80), np.uint64(0))
        out[offsets[sel] + k] = byte.astype(np.uint8)
    return out.tobytes(), nbytes.reshape(values.shape).sum(axis=1)


class _Headers:
    """Bytes that precede a feature's packed values, by feature and payload length."""

    def __init__(self):
        self._cache: dict[tuple[str, int], bytes] = {}

    def __call__(self, name: str, payload_len: int) -> bytes:
        key = (name, payload_len)
        header = self._cache.get(key)
        if header is None:
            header = self._cache[key] = self._build(name, payload_len)
        return header

    @staticmethod
    def _build(name: str, payload_len: int) -> bytes:
        key = name.encode()
        value_list = b"\x0a" + _varint(payload_len)  # Int64List/FloatList.value, packed
        # Feature: float_list is field 2, int64_list field 3.
        tag = b"\x12" if name in FLOAT_FEATURES else b"\x1a"
        feature = tag + _varint(len(value_list) + payload_len) + value_list
        feature_len = len(feature) + payload_len
        entry_head = b"\x0a" + _varint(len(key)) + key + b"\x12" + _varint(feature_len)
        entry_len = len(entry_head) + feature_len
        # Features.feature map entry: field 1.
        return b"\x0a" + _varint(entry_len) + entry_head + feature


_HEADERS = _Headers()


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(record: bytes) -> bytes:
    """One TFRecord: length, masked CRC of the length, data, masked CRC of the data."""
    length = struct.pack("<Q", len(record))
    return b"".join((length, struct.pack("<I", _masked_crc(length)), record,
                     struct.pack("<I", _masked_crc(record))))


def batch_records(batch: Batch) -> list[bytes]:
    """The framed TFRecord of each instance of a batch, in order."""
    n, width = batch.input_ids.shape
    predictions = batch.masked_positions.shape[1]
    col = np.arange(width)[None, :]
    lengths = batch.lengths[:, None]
    mask = (col < lengths).astype(np.uint8)
    type_ids = ((col >= batch.segment_a[:, None]) & (col < lengths)).astype(np.uint8)
    weights = (np.arange(predictions)[None, :] < batch.masked_counts[:, None]).astype("<f4")

    word_bytes, word_lens = varints(batch.input_ids)
    pos_bytes, pos_lens = varints(batch.masked_positions)
    mid_bytes, mid_lens = varints(batch.masked_ids)
    word_off = np.concatenate(([0], np.cumsum(word_lens))).tolist()
    pos_off = np.concatenate(([0], np.cumsum(pos_lens))).tolist()
    mid_off = np.concatenate(([0], np.cumsum(mid_lens))).tolist()
    mask_bytes, type_bytes, weight_bytes = mask.tobytes(), type_ids.tobytes(), weights.tobytes()
    labels = batch.random_next.tolist()

    h = _HEADERS
    type_head, mask_head = h("input_type_ids", width), h("input_mask", width)
    weight_head, label_head = h("masked_lm_weights", 4 * predictions), h("next_sentence_labels", 1)
    label_bytes = (b"\x00", b"\x01")
    records = []
    for i in range(n):
        w0, w1 = word_off[i], word_off[i + 1]
        p0, p1 = pos_off[i], pos_off[i + 1]
        m0, m1 = mid_off[i], mid_off[i + 1]
        features = b"".join((
            h("input_word_ids", w1 - w0), word_bytes[w0:w1],
            type_head, type_bytes[i * width:(i + 1) * width],
            mask_head, mask_bytes[i * width:(i + 1) * width],
            h("masked_lm_positions", p1 - p0), pos_bytes[p0:p1],
            h("masked_lm_ids", m1 - m0), mid_bytes[m0:m1],
            weight_head, weight_bytes[i * 4 * predictions:(i + 1) * 4 * predictions],
            label_head, label_bytes[labels[i]],
        ))
        records.append(frame(b"\x0a" + _varint(len(features)) + features))
    return records


class GzipRecordWriter:
    """Appends framed records to one GZIP file; the file appears only on success."""

    def __init__(self, stream):
        self._stream = stream
        self._zlib = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: gzip container, mtime 0
        self.records = 0

    def write(self, record: bytes) -> None:
        self._stream.write(self._zlib.compress(record))
        self.records += 1

    def finish(self) -> None:
        self._stream.write(self._zlib.flush())


@contextlib.contextmanager
def open_gzip_records(uri: str) -> Iterator[GzipRecordWriter]:
    with storage.open_write(uri, compress=False) as stream:
        writer = GzipRecordWriter(stream)
        yield writer
        writer.finish()

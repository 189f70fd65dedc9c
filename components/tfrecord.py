"""The TFRecord format without TensorFlow: framing, checksums, and reading
``tf.train.Example`` records.

The data step writes TFRecords in the data image, evaluation reads them in the
conversion image and the trainer checks them before TensorFlow starts: none of
these should need TensorFlow for it. A record is ``uint64 length``, ``uint32
masked CRC32C(length)``, the bytes, ``uint32 masked CRC32C(bytes)``; GZIP files
are recognised by their magic bytes whatever their name. (The fast batch
encoder of Examples lives with the data step: ``pretraining_data/tfrecord.py``.)
"""

from __future__ import annotations

import functools
import itertools
import gzip
import struct
import zlib
from collections.abc import Iterator

import google_crc32c
import numpy as np

from components import storage
from components.convert.tensorbundle import proto_fields, read_varint, unmask_crc
from components.errors import BadInput

GZIP_MAGIC = b"\x1f\x8b"


def masked_crc(data: bytes) -> int:
    """TFRecord's checksum: CRC32C rotated right by 15 bits, plus a constant."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@functools.lru_cache(maxsize=4096)
def _length_header(length: int) -> bytes:
    packed = struct.pack("<Q", length)
    return packed + struct.pack("<I", masked_crc(packed))


def frame(record: bytes) -> bytes:
    """One TFRecord: length, masked CRC of the length, data, masked CRC of the data.

    The length part is cached: the data step frames millions of records of a few lengths.
    """
    return b"".join((_length_header(len(record)), record, struct.pack("<I", masked_crc(record))))


_U32 = struct.Struct("<I")


def _masked_crcs(records: list[bytes]) -> list[bytes]:
    """Each record's masked CRC as 4 bytes: the masking done for all at once in numpy."""
    crcs = np.fromiter(map(google_crc32c.value, records), dtype=np.uint32, count=len(records))
    masked = ((crcs >> 15) | (crcs << 17)) + np.uint32(0xA282EAD8)  # uint32: wraps like masked_crc's & 0xFFFFFFFF
    return list(map(_U32.pack, masked.tolist()))


def framed_join(records: list[bytes]) -> bytes:
    """``frame`` of each record, joined: no Python loop (map over C functions), no framed copy of each record."""
    return b"".join(itertools.chain.from_iterable(
        zip(map(_length_header, map(len, records)), records, _masked_crcs(records))))


def _unpack_packed(value: int | bytes, wire_fixed32: bool) -> list:
    """Repeated numeric fields come packed (bytes) or one value per field (int)."""
    if isinstance(value, int):
        return [struct.unpack("<f", struct.pack("<I", value))[0]] if wire_fixed32 else [value]
    if wire_fixed32:
        return list(np.frombuffer(value, dtype="<f4"))
    out, pos = [], 0
    while pos < len(value):
        v, pos = read_varint(value, pos)
        out.append(v - (1 << 64) if v >= 1 << 63 else v)
    return out


def parse_example(data: bytes) -> dict[str, list]:
    """``tf.train.Example`` bytes -> {feature name: list of ints, floats or bytes}."""
    features: dict[str, list] = {}
    for field, features_msg in proto_fields(data):
        if field != 1:
            continue
        for f, entry in proto_fields(features_msg):
            if f != 1:
                continue
            name, feature = "", b""
            for g, v in proto_fields(entry):
                if g == 1:
                    name = v.decode("utf-8")
                elif g == 2:
                    feature = v
            values: list = []
            for kind, lst in proto_fields(feature):
                for h, v in proto_fields(lst):
                    if h != 1:
                        continue
                    if kind == 1:  # BytesList
                        values.append(v)
                    elif kind == 2:  # FloatList
                        values.extend(_unpack_packed(v, wire_fixed32=True))
                    elif kind == 3:  # Int64List
                        values.extend(_unpack_packed(v, wire_fixed32=False))
            features[name] = values
    return features


def iter_records(uri: str) -> Iterator[bytes]:
    """Yields each record's bytes, checking both CRCs; bad data names the file and record."""
    with storage.open_read(uri, decompress=False) as raw:
        head = raw.read(2)
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if head == GZIP_MAGIC else raw
        number = 0
        try:
            while True:
                header = stream.read(12)
                if not header:
                    return
                number += 1
                if len(header) < 12:
                    raise BadInput(f"{uri}: record {number}: truncated header")
                length, length_crc = struct.unpack("<QI", header)
                if google_crc32c.value(header[:8]) != unmask_crc(length_crc):
                    raise BadInput(f"{uri}: record {number}: corrupt length (CRC mismatch); not a TFRecord file?")
                data = stream.read(length)
                footer = stream.read(4)
                if len(data) < length or len(footer) < 4:
                    raise BadInput(f"{uri}: record {number}: truncated")
                if google_crc32c.value(data) != unmask_crc(struct.unpack("<I", footer)[0]):
                    raise BadInput(f"{uri}: record {number}: corrupt data (CRC mismatch)")
                yield data
        except (EOFError, OSError, zlib.error) as e:
            raise BadInput(f"{uri}: record {number}: corrupt or truncated compressed data ({e})") from e


def iter_examples(uri: str) -> Iterator[dict[str, list]]:
    for number, data in enumerate(iter_records(uri), 1):
        try:
            yield parse_example(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise BadInput(f"{uri}: record {number}: not a tf.train.Example ({e})") from e

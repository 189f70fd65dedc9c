"""Reads TensorFlow checkpoints (the TensorBundle format) without TensorFlow.

A checkpoint ``PREFIX`` is ``PREFIX.index`` plus ``PREFIX.data-SSSSS-of-NNNNN``
shards. The index is a LevelDB-style SSTable whose keys are variable names and
whose values are ``BundleEntryProto`` messages (dtype, shape, shard, offset,
size, masked CRC32C); the empty key holds a ``BundleHeaderProto``. Tensor bytes
sit raw in the shards (several with multi-host saves). A variable split by a
sharding policy has an entry listing its slices and one entry per slice under an
OrderedCode key (``\x00``, the name, the extents). The conversion image then needs neither TensorFlow nor
its protobuf definitions, and reading works on local paths and ``gs://`` alike.
"""

from __future__ import annotations

import codecs
import contextlib
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import google_crc32c
import numpy as np

from components import storage
from components.errors import BadInput

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # two BlockHandles padded to 40 bytes + 8-byte magic
BLOCK_TRAILER_SIZE = 5  # compression type byte + masked CRC32C
NO_COMPRESSION, SNAPPY_COMPRESSION = 0, 1
STRING_DTYPE = 7

# tensorflow/core/framework/types.proto DataType -> numpy (little endian)
NUMPY_DTYPES = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"),
    5: np.dtype("<i2"), 6: np.dtype("i1"), 9: np.dtype("<i8"), 10: np.dtype("?"),
    17: np.dtype("<u2"), 19: np.dtype("<f2"), 22: np.dtype("<u4"), 23: np.dtype("<u8"),
    14: np.dtype("<u2"),  # bfloat16: read as bits, widened to float32 below
}
BFLOAT16_DTYPE = 14
LITTLE_ENDIAN = 0


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives and what it is (a parsed BundleEntryProto)."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int | None
    # A variable saved in slices (a sharding policy split it): each slice's extent per dimension,
    # (start, length or None for the whole dimension); the bytes live in the slice entries.
    slices: tuple[tuple[tuple[int, int | None], ...], ...] = ()


# ---------------------------------------------------------------------------
# Wire formats: varints, protobuf fields, masked CRC32C, snappy
# ---------------------------------------------------------------------------

def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def proto_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """Decodes protobuf wire format into ``(field_number, value)`` pairs.

    Varints come back as ints, fixed32/64 as ints, length-delimited as bytes.
    """
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
        elif wire in (1, 5):  # fixed64, fixed32
            width = 8 if wire == 1 else 4
            if pos + width > len(buf):
                raise ValueError("truncated fixed-width field")
            value, pos = int.from_bytes(buf[pos:pos + width], "little"), pos + width
        elif wire == 2:
            n, pos = read_varint(buf, pos)
            value, pos = bytes(buf[pos:pos + n]), pos + n
            if pos > len(buf):
                raise ValueError("truncated length-delimited field")
        else:
            raise ValueError(f"unsupported wire type {wire}")
        out.append((field, value))
    return out


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def unmask_crc(masked: int) -> int:
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def snappy_decompress(data: bytes) -> bytes:
    """Raw (unframed) snappy, as LevelDB tables use it for compressed blocks."""
    length, pos = read_varint(data, 0)
    out = bytearray()
    while pos < len(data):
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal
            n = tag >> 2
            if n >= 60:
                extra = n - 59
                n = int.from_bytes(data[pos:pos + extra], "little")
                pos += extra
            n += 1
            if pos + n > len(data):
                raise ValueError("snappy literal runs past the end")
            out += data[pos:pos + n]
            pos += n
            continue
        if kind == 1:
            n = 4 + ((tag >> 2) & 7)
            offset = ((tag >> 5) << 8) | data[pos]
            pos += 1
        else:
            width = 2 if kind == 2 else 4
            n = (tag >> 2) + 1
            offset = int.from_bytes(data[pos:pos + width], "little")
            pos += width
        if offset == 0 or offset > len(out):
            raise ValueError("snappy copy offset out of range")
        start = len(out) - offset
        if offset >= n:
            out += out[start:start + n]
        else:  # overlapping copy repeats the last `offset` bytes
            for i in range(n):
                out.append(out[start + i])
    if len(out) != length:
        raise ValueError(f"snappy output is {len(out)} bytes, header says {length}")
    return bytes(out)


# ---------------------------------------------------------------------------
# SSTable
# ---------------------------------------------------------------------------

def _block_handle(buf: bytes, pos: int) -> tuple[tuple[int, int], int]:
    offset, pos = read_varint(buf, pos)
    size, pos = read_varint(buf, pos)
    return (offset, size), pos


def _read_block(table: bytes, handle: tuple[int, int], where: str) -> bytes:
    offset, size = handle
    end = offset + size + BLOCK_TRAILER_SIZE
    if end > len(table):
        raise BadInput(f"{where}: block at {offset} runs past the end of the file (truncated?)")
    contents = table[offset:offset + size]
    kind = table[offset + size]
    stored = struct.unpack_from("<I", table, offset + size + 1)[0]
    if google_crc32c.value(table[offset:offset + size + 1]) != unmask_crc(stored):
        raise BadInput(f"{where}: checksum mismatch in block at {offset} (corrupt file)")
    if kind == NO_COMPRESSION:
        return contents
    if kind == SNAPPY_COMPRESSION:
        try:
            return snappy_decompress(contents)
        except (ValueError, IndexError) as e:
            raise BadInput(f"{where}: corrupt snappy block at {offset} ({e})") from e
    raise BadInput(f"{where}: block at {offset} has unknown compression type {kind}")


def _block_entries(block: bytes, where: str) -> list[tuple[bytes, bytes]]:
    """Key/value pairs of a block; keys are prefix-compressed against the previous key."""
    if len(block) < 4:
        raise BadInput(f"{where}: block too short")
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 * (num_restarts + 1)
    if limit < 0:
        raise BadInput(f"{where}: bad restart count {num_restarts}")
    entries, key, pos = [], b"", 0
    try:
        while pos < limit:
            shared, pos = read_varint(block, pos)
            non_shared, pos = read_varint(block, pos)
            value_len, pos = read_varint(block, pos)
            if shared > len(key) or pos + non_shared + value_len > limit:
                raise ValueError("entry runs past the block")
            key = key[:shared] + block[pos:pos + non_shared]
            pos += non_shared
            entries.append((key, block[pos:pos + value_len]))
            pos += value_len
    except ValueError as e:
        raise BadInput(f"{where}: corrupt block ({e})") from e
    return entries


def sstable_items(table: bytes, where: str) -> list[tuple[bytes, bytes]]:
    """All key/value pairs of an SSTable held in memory, in key order."""
    if len(table) < FOOTER_SIZE:
        raise BadInput(f"{where}: too short for a checkpoint index ({len(table)} bytes)")
    footer = table[-FOOTER_SIZE:]
    if struct.unpack_from("<Q", footer, FOOTER_SIZE - 8)[0] != TABLE_MAGIC:
        raise BadInput(f"{where}: not a TensorFlow checkpoint index (bad magic number)")
    try:
        _meta, pos = _block_handle(footer, 0)
        index_handle, _ = _block_handle(footer, pos)
    except ValueError as e:
        raise BadInput(f"{where}: corrupt footer ({e})") from e
    items = []
    for _sep, handle_bytes in _block_entries(_read_block(table, index_handle, where), where):
        try:
            handle, _ = _block_handle(handle_bytes, 0)
        except ValueError as e:
            raise BadInput(f"{where}: corrupt index entry ({e})") from e
        items.extend(_block_entries(_read_block(table, handle, where), where))
    return items


# ---------------------------------------------------------------------------
# TensorBundle
# ---------------------------------------------------------------------------

def _parse_entry(name: str, value: bytes) -> TensorEntry:
    dtype = shard_id = offset = size = 0
    crc, shape, slices = None, (), []
    for field, v in proto_fields(value):
        if field == 1:
            dtype = v
        elif field == 2:
            dims = []
            for f, dim in proto_fields(v):
                if f == 2:
                    dims.append(next((_signed64(s) for g, s in proto_fields(dim) if g == 1), 0))
                elif f == 3 and dim:
                    raise ValueError("tensor of unknown rank")
            shape = tuple(dims)
        elif field == 3:
            shard_id = v
        elif field == 4:
            offset = v
        elif field == 5:
            size = v
        elif field == 6:
            crc = v
        elif field == 7:
            slices.append(_parse_slice(v))
    return TensorEntry(name, dtype, shape, shard_id, offset, size, crc, tuple(slices))


def _parse_slice(buf: bytes) -> tuple[tuple[int, int | None], ...]:
    """TensorSliceProto: one Extent {start, length (absent = the whole dimension)} per dimension."""
    extents = []
    for field, extent in proto_fields(buf):
        if field == 1:
            values = dict(proto_fields(extent))
            extents.append((_signed64(values.get(1, 0)), _signed64(values[2]) if 2 in values else None))
    return tuple(extents)


def _slice_key_name(key: bytes) -> str:
    """The variable name in a slice key (OrderedCode: 0, the name with \\x00 escaped, extents)."""
    out, pos = bytearray(), 1
    while pos < len(key):
        b = key[pos]
        if b == 0 and key[pos + 1:pos + 2] == b"\x01":
            return out.decode("utf-8")
        if b in (0, 0xFF):  # escaped \x00 (\x00\xff) or \xff (\xff\x00)
            pos += 1
        out.append(b)
        pos += 1
    raise ValueError("unterminated name in slice key")


STATE_FILE = "checkpoint"  # TensorFlow's state file beside the checkpoints of a model dir


def state_file_checkpoint(model_dir: str) -> str | None:
    """The checkpoint prefix that ``model_dir``'s TensorFlow state file names (its
    ``model_checkpoint_path``), or None when there is no state file or it names none.

    The name is a text-format string (C escapes such as ``\\ooo`` octal bytes, around UTF-8),
    relative to the directory or absolute. A state file written elsewhere (a model dir copied
    to gs://) may hold an absolute path that does not exist here: then the same base name in
    ``model_dir`` is taken when its ``.index`` exists.
    """
    state = storage.join(model_dir, STATE_FILE)
    if not storage.exists(state):
        return None
    m = re.search(r'^model_checkpoint_path:\s*"((?:[^"\\]|\\.)*)"', storage.read_text(state), re.M)
    if not m:
        return None
    name = codecs.escape_decode(m.group(1).encode("utf-8"))[0].decode("utf-8")
    prefix = name if (name.startswith("/") or "://" in name) else storage.join(model_dir, name)
    if not storage.exists(prefix + ".index"):
        here = storage.join(model_dir, storage.basename(name))
        if storage.exists(here + ".index"):
            return here
    return prefix


def _split_prefix(checkpoint: str) -> str:
    """Accepts ``.../ckpt-20``, ``.../ckpt-20.index`` or a model dir with a ``checkpoint`` file."""
    checkpoint = str(checkpoint).rstrip("/")
    if checkpoint.endswith(".index"):
        return checkpoint[: -len(".index")]
    if storage.exists(checkpoint + ".index"):
        return checkpoint
    state = storage.join(checkpoint, STATE_FILE)
    prefix = state_file_checkpoint(checkpoint)
    if prefix is not None:
        if not storage.exists(prefix + ".index"):
            raise BadInput(f"{state}: names {prefix!r}, but {prefix}.index does not exist")
        return prefix
    if storage.exists(state):
        raise BadInput(f"{state}: no model_checkpoint_path line")
    raise BadInput(f"{checkpoint}: no checkpoint here (neither {checkpoint}.index nor "
                   f"{state} exists)")


class TensorBundle:
    """A checkpoint opened for reading: ``names()``, ``shape(name)``, ``read(name)``."""

    def __init__(self, checkpoint: str):
        self.prefix = _split_prefix(checkpoint)
        index_uri = self.prefix + ".index"
        entries: dict[str, TensorEntry] = {}
        num_shards = 1
        slice_entries: dict[str, list[TensorEntry]] = {}
        for key, value in sstable_items(storage.read_bytes(index_uri), index_uri):
            try:
                if key.startswith(b"\x00"):  # one slice of a sliced variable, in extent order
                    name = _slice_key_name(key)
                    slice_entries.setdefault(name, []).append(_parse_entry(name, value))
                    continue
                name = key.decode("utf-8")
                if name == "":
                    for field, v in proto_fields(value):
                        if field == 1:
                            num_shards = v
                        elif field == 2 and v != LITTLE_ENDIAN:
                            raise BadInput(f"{index_uri}: big-endian checkpoints are not supported")
                    continue
                entries[name] = _parse_entry(name, value)
            except (ValueError, UnicodeDecodeError) as e:
                raise BadInput(f"{index_uri}: corrupt entry for {key!r} ({e})") from e
        self.num_shards = num_shards
        self.entries = entries
        self.slice_entries = slice_entries
        for name, entry in entries.items():
            if entry.slices and len(slice_entries.get(name, ())) != len(entry.slices):
                raise BadInput(f"{index_uri}: {name!r} has {len(entry.slices)} slices but "
                               f"{len(slice_entries.get(name, ()))} slice entries")

    def names(self) -> list[str]:
        return sorted(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entry(name).shape

    def _entry(self, name: str) -> TensorEntry:
        try:
            return self.entries[name]
        except KeyError:
            raise BadInput(f"{self.prefix}: checkpoint has no variable {name!r}") from None

    def shard_uri(self, shard_id: int) -> str:
        return f"{self.prefix}.data-{shard_id:05d}-of-{self.num_shards:05d}"

    def read_order(self, names) -> list[str]:
        """``names`` in storage order (shard, offset): the order that reads each shard front to back."""
        return [e.name for e in sorted((self._entry(n) for n in names), key=lambda e: (e.shard_id, e.offset))]

    def iter_tensors(self, names) -> Iterator[tuple[str, np.ndarray]]:
        """Yields ``(name, array)`` one at a time in storage order, so memory holds one tensor."""
        with contextlib.ExitStack() as stack:
            streams: dict[int, object] = {}

            def read(entry: TensorEntry) -> np.ndarray:
                if entry.shard_id not in streams:
                    if len(streams) >= 2:  # storage order: an earlier shard is finished with
                        stack.close()
                        streams.clear()
                    streams[entry.shard_id] = stack.enter_context(
                        storage.open_read(self.shard_uri(entry.shard_id), decompress=False))
                stream = streams[entry.shard_id]
                stream.seek(entry.offset)
                return self._decode(entry, stream.read(entry.size))

            for name in self.read_order(names):
                entry = self.entries[name]
                if not entry.slices:
                    yield name, read(entry)
                    continue
                dtype = np.float32 if entry.dtype == BFLOAT16_DTYPE else NUMPY_DTYPES.get(entry.dtype)
                if dtype is None:
                    raise BadInput(f"{self.prefix} ({name}): unsupported dtype enum {entry.dtype} for a sliced variable")
                full = np.empty(entry.shape, dtype=dtype)
                extents = sorted(entry.slices, key=lambda sl: [x for start, n in sl for x in (start, -1 if n is None else n)])
                for extent, part in zip(extents, self.slice_entries[name]):
                    index = tuple(slice(start, None if n is None else start + n) for start, n in extent)
                    full[index] = read(part)
                yield name, full

    def read_many(self, names) -> dict[str, np.ndarray]:
        return dict(self.iter_tensors(names))

    def read(self, name: str) -> np.ndarray:
        return self.read_many([name])[name]

    def _decode(self, entry: TensorEntry, data: bytes) -> np.ndarray:
        where = f"{self.shard_uri(entry.shard_id)} ({entry.name})"
        if len(data) != entry.size:
            raise BadInput(f"{where}: expected {entry.size} bytes at offset {entry.offset}, "
                           f"got {len(data)} (truncated shard?)")
        if entry.dtype == STRING_DTYPE:
            return self._decode_strings(entry, data, where)
        if entry.crc32c is not None and google_crc32c.value(data) != unmask_crc(entry.crc32c):
            raise BadInput(f"{where}: checksum mismatch (corrupt shard)")
        dtype = NUMPY_DTYPES.get(entry.dtype)
        if dtype is None:
            raise BadInput(f"{where}: unsupported dtype enum {entry.dtype}")
        array = np.frombuffer(data, dtype=dtype)
        if entry.dtype == BFLOAT16_DTYPE:
            array = (array.astype(np.uint32) << 16).view(np.float32)
        count = int(np.prod(entry.shape, dtype=np.int64)) if entry.shape else 1
        if array.size != count:
            raise BadInput(f"{where}: {array.size} elements for shape {entry.shape}")
        return array.reshape(entry.shape).copy()

    @staticmethod
    def _decode_strings(entry: TensorEntry, data: bytes, where: str) -> np.ndarray:
        """String tensors: varint lengths, a 4-byte checksum of them, then the bytes."""
        count = int(np.prod(entry.shape, dtype=np.int64)) if entry.shape else 1
        try:
            lengths, pos = [], 0
            for _ in range(count):
                n, pos = read_varint(data, pos)
                lengths.append(n)
            pos += 4
            values = []
            for n in lengths:
                values.append(data[pos:pos + n])
                pos += n
        except ValueError as e:
            raise BadInput(f"{where}: corrupt string tensor ({e})") from e
        return np.array(values, dtype=object).reshape(entry.shape)

"""The PyTorch trainer's data: documents from the tokenized shards, packed into sequences and
masked when loaded.

Why at load time: a stage's "dupe factor" becomes epochs over one copy on disk, and each epoch
sees new masks. Every random choice is a function of ``(seed, stage, epoch, index)`` alone
(numpy ``default_rng`` seeded with that tuple), never of a worker's RNG or of the order workers
finish in: any number of DataLoader workers, any rank layout and a resume mid-epoch all produce
the same batches. The data position is ``(epoch, micro-batch index)``.

Sequences: each document piece is ``[CLS] tokens [SEP]`` (a "segment"); packed sequences hold
several. ``segment_ids`` (1, 2, ... per segment, 0 for padding) go to the trainer, which builds
the block-diagonal attention mask on the device (``attention_masks``): O(L) through the
DataLoader's pipes, O(L^2) only where the attention runs.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass

import numpy as np

from components import storage
from components.errors import BadInput
from components.tokenizer import files as tokenizer_files

SEGMENT_OVERHEAD = 2  # [CLS] + [SEP]
# Random replacement tokens (the "10% random") come from the vocabulary after the specials.
FIRST_ORDINARY_ID = len(tokenizer_files.SPECIAL_TOKENS)
IGNORE_INDEX = -100


@dataclass
class Documents:
    """All documents of a stage, concatenated: ``ids[offsets[d]:offsets[d+1]]`` is document ``d``."""

    # Token ids and word-start marks (bool; all True when the tokenizer has no word splitter):
    # arrays in memory (``from_list``), or memory-mapped shards (``load_documents``: only
    # contiguous slices, ``[a:b]``, which is all packing and the dataset take).
    ids: np.ndarray | Concatenated  # unsigned or int32 (the shards' dtype when read from shards)
    word_starts: np.ndarray | Concatenated
    offsets: np.ndarray  # int64, len = documents + 1
    vocab_size: int
    tokenizer_type: str = ""

    @classmethod
    def from_list(cls, docs, *, vocab_size: int, tokenizer_type: str = "") -> "Documents":
        """``docs``: ``(ids, word_starts or None)`` pairs; empty documents are dropped."""
        docs = [(np.asarray(i), w) for i, w in docs if len(i)]
        lengths = np.array([len(i) for i, _ in docs], dtype=np.int64)
        offsets = np.zeros(len(docs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.concatenate([i for i, _ in docs]).astype(np.int32) if docs else np.zeros(0, np.int32)
        starts = (np.concatenate([np.ones(len(i), bool) if w is None else np.asarray(w, bool) for i, w in docs])
                  if docs else np.zeros(0, bool))
        if len(starts) != len(ids):
            raise BadInput("documents: word_starts and ids differ in length")
        if len(ids) and (int(ids.max()) >= vocab_size or int(ids.min()) < 0):
            raise BadInput(f"documents: token id {int(ids.max())} is outside the tokenizer's vocabulary of "
                           f"{vocab_size} (shards of another tokenizer?)")
        return cls(ids, starts, offsets, int(vocab_size), tokenizer_type)

    @classmethod
    def from_codes(cls, docs, *, vocab_size: int, tokenizer_type: str = "") -> "Documents":
        """From the data step's codes (``id | continuation bit`` when a token continues a word)."""
        from components.pretraining_data.tokenization import code_dtype, continuation_bit

        bit, dtype = continuation_bit(vocab_size), code_dtype(vocab_size)
        pairs = []
        for codes in docs:
            codes = np.asarray(codes, dtype=dtype)
            pairs.append((codes & dtype.type(bit - 1), (codes & dtype.type(bit)) == 0))
        return cls.from_list(pairs, vocab_size=vocab_size, tokenizer_type=tokenizer_type)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


class MappedArray:
    """A ``.npy`` file, memory-mapped on first use: slices read only the pages they cover.

    Pickles as its path, so DataLoader workers started by spawn or forkserver map the file
    again rather than receive a copy (``numpy.memmap`` pickles its whole content).
    ``packed_bits``: the file is ``numpy.packbits`` output and this array is its first
    ``packed_bits`` bits, as bool.
    """

    def __init__(self, path: str, packed_bits: int | None = None):
        self.path, self.packed_bits = path, packed_bits
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        return self._array

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(bool) if self.packed_bits is not None else self.array.dtype

    def __len__(self) -> int:
        return self.packed_bits if self.packed_bits is not None else len(self.array)

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop, step = key.indices(len(self))
        if step != 1:
            raise IndexError("MappedArray takes contiguous slices only")
        stop = max(start, stop)
        if self.packed_bits is None:
            return np.asarray(self.array[start:stop])
        bits = np.unpackbits(self.array[start // 8:(stop + 7) // 8])
        return bits[start % 8:start % 8 + stop - start].astype(bool)

    def __getstate__(self) -> dict:
        return {"path": self.path, "packed_bits": self.packed_bits, "_array": None}


class Concatenated:
    """Arrays end to end, read by contiguous slices (a slice within one part reads only that part)."""

    def __init__(self, parts: list):
        self.parts = [p for p in parts if len(p)]
        self.starts = np.zeros(len(self.parts) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in self.parts], out=self.starts[1:])
        self.dtype = self.parts[0].dtype if self.parts else np.dtype(np.int32)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop, step = key.indices(len(self))
        if step != 1:
            raise IndexError("Concatenated takes contiguous slices only")
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        pieces = []
        while start < stop:
            a = int(self.starts[first])
            b = min(stop, int(self.starts[first + 1]))
            pieces.append(self.parts[first][start - a:b - a])
            start, first = b, first + 1
        if len(pieces) == 1:
            return pieces[0]
        return np.concatenate(pieces) if pieces else np.zeros(0, self.dtype)


def _check_ids(mapped: MappedArray, vocab_size: int, where: str, chunk: int = 1 << 18) -> None:
    """Every id below ``vocab_size``, read with plain file reads into one small buffer: the pages
    pass through the page cache, never into this process's memory maps (RSS stays flat)."""
    array = mapped.array
    if array.dtype.itemsize <= 2 and vocab_size >= 1 << (8 * array.dtype.itemsize):
        return  # the dtype cannot hold an id outside the vocabulary
    buffer = np.empty(min(chunk, len(array)), dtype=array.dtype)
    with open(mapped.path, "rb") as f:
        f.seek(array.offset)
        done = 0
        while done < len(array):
            n = f.readinto(memoryview(buffer[:min(chunk, len(array) - done)]).cast("B")) // array.dtype.itemsize
            if not n:
                raise BadInput(f"{where}: tokens.npy ends after {done} of {len(array)} ids")
            top = int(buffer[:n].max())
            if top >= vocab_size:
                raise BadInput(f"{where}: token id {top} is outside the vocabulary of {vocab_size}")
            done += n


def load_documents(uris: list[str], *, vocab_size: int, tokenizer_type: str, spool: str | None = None) -> Documents:
    """The documents of the tokenized shards at ``uris`` (``pretraining_data.shards`` directories),
    refusing a shard made with another tokenizer (vocabulary size or type, or an id outside it).

    Token ids and word-start bits stay memory-mapped (``MappedArray``; the bits still packed), so
    memory grows with the number of documents (8 bytes each, for the offsets), not with tokens:
    a CC-100-sized corpus loads in the memory of its document table. Shards on GCS are copied into
    ``spool`` (default: a temporary directory removed at exit) and mapped from there.
    """
    from components.pretraining_data import shards

    ids, starts, lengths = [], [], []
    for i, uri in enumerate(uris):
        shard_spool = None
        if storage.is_gcs(uri):
            shard_spool = os.path.join(spool or _spool_dir(), f"shard-{i:05d}")
            os.makedirs(shard_spool, exist_ok=True)
        shard = shards.map_token_shards(uri, spool=shard_spool)
        if shard.vocab_size != int(vocab_size) or (tokenizer_type and shard.tokenizer_type != tokenizer_type):
            raise BadInput(f"{uri}: shard made with a {shard.tokenizer_type} tokenizer of {shard.vocab_size} tokens, "
                           f"this tokenizer is {tokenizer_type} with {vocab_size} (shards of another tokenizer?)")
        doc_ends = np.asarray(shard.sentence_ends)[np.asarray(shard.document_ends) - 1] if len(shard) else []
        lengths.append(np.diff(np.concatenate([[0], doc_ends])).astype(np.int64))
        tokens = MappedArray(shard.tokens.filename)
        _check_ids(tokens, int(vocab_size), uri)
        ids.append(tokens)
        starts.append(MappedArray(shard.word_starts.filename, packed_bits=len(tokens)))
    lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    keep = lengths > 0
    offsets = np.zeros(int(keep.sum()) + 1, dtype=np.int64)
    np.cumsum(lengths[keep], out=offsets[1:])
    return Documents(Concatenated(ids), Concatenated(starts), offsets, int(vocab_size), tokenizer_type)


_SPOOL: list[str] = []


def _spool_dir() -> str:
    """One temporary directory per process for local copies of GCS shards, removed at exit."""
    if not _SPOOL:
        import atexit
        import shutil
        import tempfile

        _SPOOL.append(tempfile.mkdtemp(prefix="bertja-shards-"))
        atexit.register(shutil.rmtree, _SPOOL[0], ignore_errors=True)
    return _SPOOL[0]


# ---------------------------------------------------------------------------
# Packing: documents -> sequences of segments
# ---------------------------------------------------------------------------

@dataclass
class Packs:
    """Sequence ``s`` holds segments ``seq_offsets[s]:seq_offsets[s+1]``; a segment is
    ``documents.ids[start:start+length]`` wrapped in [CLS] ... [SEP]."""

    seg_start: np.ndarray
    seg_length: np.ndarray
    seq_offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.seq_offsets) - 1

    def sequence_lengths(self) -> np.ndarray:
        per_segment = self.seg_length + SEGMENT_OVERHEAD
        return np.add.reduceat(per_segment, self.seq_offsets[:-1]) if len(self) else np.zeros(0, np.int64)


def _pieces(documents: Documents, order: np.ndarray, max_content: int) -> tuple[np.ndarray, np.ndarray]:
    """Documents in ``order`` cut into pieces of at most ``max_content`` tokens: (starts, lengths)."""
    lengths = documents.lengths()[order]
    counts = -(-lengths // max_content)
    doc_start = np.repeat(documents.offsets[:-1][order], counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    k = np.arange(counts.sum()) - first  # piece number within its document
    starts = doc_start + k * max_content
    doc_end = np.repeat(documents.offsets[1:][order], counts)
    return starts, np.minimum(max_content, doc_end - starts)


def pack(documents: Documents, seq_length: int, packing: str, rng: np.random.Generator) -> Packs:
    """Sequences of at most ``seq_length`` tokens, specials included.

    ``naive``: documents in a shuffled order fill each sequence to the end, a document running
    over continuing in the next (ModernBERT's pretraining). ``best-fit``: pieces go, longest first,
    into the open sequence with the least room that fits them (best-fit decreasing: context
    extension, almost no padding, no document cut except at the length). ``none``: one piece
    per sequence, padded.
    """
    max_content = seq_length - SEGMENT_OVERHEAD
    order = rng.permutation(len(documents))
    starts, lengths = _pieces(documents, order, max_content)
    if packing == "none":
        return Packs(starts, lengths, np.arange(len(starts) + 1, dtype=np.int64))
    if packing == "naive":
        return _pack_naive(starts, lengths, seq_length)
    if packing == "best-fit":
        return _pack_best_fit(starts, lengths, seq_length, rng)
    raise BadInput(f"packing {packing!r}: not naive, best-fit or none")


def _pack_naive(starts, lengths, seq_length) -> Packs:
    seg_start, seg_length, seq_offsets = [], [], [0]
    room = seq_length
    for start, length in zip(starts.tolist(), lengths.tolist()):
        while length:
            if room < SEGMENT_OVERHEAD + 1:
                seq_offsets.append(len(seg_start))
                room = seq_length
            take = min(length, room - SEGMENT_OVERHEAD)
            seg_start.append(start)
            seg_length.append(take)
            room -= take + SEGMENT_OVERHEAD
            start, length = start + take, length - take
    if len(seg_start) > seq_offsets[-1]:
        seq_offsets.append(len(seg_start))
    return Packs(np.array(seg_start, np.int64), np.array(seg_length, np.int64), np.array(seq_offsets, np.int64))


def _pack_best_fit(starts, lengths, seq_length, rng) -> Packs:
    by_size = np.argsort(-lengths, kind="stable")
    bins: list[list[int]] = []  # piece indices per sequence
    rooms: list[int] = []  # distinct room values with an open bin, sorted
    open_bins: dict[int, list[int]] = {}  # room -> bins with that much room
    for piece in by_size.tolist():
        need = int(lengths[piece]) + SEGMENT_OVERHEAD
        i = bisect.bisect_left(rooms, need)
        if i < len(rooms):
            room = rooms[i]
            b = open_bins[room].pop()
            if not open_bins[room]:
                del open_bins[room]
                rooms.pop(i)
        else:
            room, b = seq_length, len(bins)
            bins.append([])
        bins[b].append(piece)
        left = room - need
        if left >= SEGMENT_OVERHEAD + 1:
            if left not in open_bins:
                open_bins[left] = []
                bisect.insort(rooms, left)
            open_bins[left].append(b)
    order = rng.permutation(len(bins))
    pieces = [p for b in order.tolist() for p in bins[b]]
    counts = np.array([len(bins[b]) for b in order.tolist()], dtype=np.int64)
    seq_offsets = np.zeros(len(bins) + 1, dtype=np.int64)
    np.cumsum(counts, out=seq_offsets[1:])
    return Packs(starts[pieces], lengths[pieces], seq_offsets)


# ---------------------------------------------------------------------------
# Masking (80-10-10, whole words from the word-start marks)
# ---------------------------------------------------------------------------

def mask_tokens(ids: np.ndarray, word_starts: np.ndarray, special: np.ndarray, *, rate: float, whole_word: bool,
                vocab_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, labels): up to ``round(rate x maskable tokens)`` tokens chosen as whole words (or
    single tokens): words in a random order while they fit the budget (one word larger than the
    whole budget is taken alone); each chosen token becomes [MASK] 80%, a random token 10%, itself 10%.
    Labels are the original ids at chosen tokens, ``IGNORE_INDEX`` elsewhere."""
    maskable = np.flatnonzero(~special)
    inputs, labels = ids.copy(), np.full(len(ids), IGNORE_INDEX, dtype=np.int64)
    if not len(maskable):
        return inputs, labels
    target = max(1, int(round(rate * len(maskable))))
    if whole_word:
        begins = word_starts[maskable].copy()
        begins[0] = True
        begins[1:] |= np.diff(maskable) != 1  # a special token in between starts a new group
        group = np.cumsum(begins) - 1
    else:
        group = np.arange(len(maskable))
    sizes = np.bincount(group)
    chosen_groups = rng.permutation(len(sizes))
    keep = chosen_groups[np.cumsum(sizes[chosen_groups]) <= target]
    if not len(keep):  # the first group drawn is larger than the whole budget: take it alone
        keep = chosen_groups[:1]
    chosen = maskable[np.isin(group, keep)]
    labels[chosen] = ids[chosen]
    draw = rng.random(len(chosen))
    inputs[chosen[draw < 0.8]] = tokenizer_files.MASK_ID
    random_at = chosen[(draw >= 0.8) & (draw < 0.9)]
    inputs[random_at] = rng.integers(FIRST_ORDINARY_ID, vocab_size, len(random_at))
    return inputs, labels


# ---------------------------------------------------------------------------
# Dataset, batches, collation
# ---------------------------------------------------------------------------

class PretrainingDataset:
    """Map-style dataset (torch DataLoader takes it as is): item ``i`` of one stage's epoch is
    packed sequence ``i``, masked with ``default_rng((seed, stage, epoch, i))``."""

    def __init__(self, documents: Documents, *, seq_length: int, packing: str, mask_rate: float,
                 whole_word: bool, seed: int, stage: int, epoch: int):
        self.documents, self.seq_length, self.mask_rate = documents, seq_length, mask_rate
        self.whole_word, self.seed, self.stage, self.epoch = whole_word, seed, stage, epoch
        self.packs = pack(documents, seq_length, packing, np.random.default_rng((seed, stage, epoch)))

    def __len__(self) -> int:
        return len(self.packs)

    def __getitem__(self, i: int) -> dict:
        p, d = self.packs, self.documents
        ids, starts, seg_ids, pos = [], [], [], []
        for k, s in enumerate(range(p.seq_offsets[i], p.seq_offsets[i + 1]), 1):
            a, n = int(p.seg_start[s]), int(p.seg_length[s])
            ids += [[tokenizer_files.CLS_ID], d.ids[a:a + n], [tokenizer_files.SEP_ID]]
            starts += [[True], d.word_starts[a:a + n], [True]]
            seg_ids.append(np.full(n + SEGMENT_OVERHEAD, k, np.int32))
            pos.append(np.arange(n + SEGMENT_OVERHEAD, dtype=np.int32))
        ids_a = np.concatenate(ids).astype(np.int64)
        special = np.isin(ids_a, (tokenizer_files.CLS_ID, tokenizer_files.SEP_ID, tokenizer_files.PAD_ID))
        inputs, labels = mask_tokens(ids_a, np.concatenate(starts).astype(bool), special, rate=self.mask_rate,
                                     whole_word=self.whole_word, vocab_size=self.documents.vocab_size,
                                     rng=np.random.default_rng((self.seed, self.stage, self.epoch, i)))
        return {"input_ids": inputs, "labels": labels, "segment_ids": np.concatenate(seg_ids),
                "position_ids": np.concatenate(pos), "original_ids": ids_a}


def epoch_batches(n_sequences: int, *, micro_batch: int, rank: int, world: int, seed: int, stage: int,
                  epoch: int) -> list[list[int]]:
    """This rank's micro-batches of one epoch: a seeded permutation, dealt round-robin to the ranks
    (each gets the same number), cut into ``micro_batch``-sized lists (a short tail is dropped)."""
    order = np.random.default_rng((seed, stage, epoch, 1)).permutation(n_sequences)
    per_rank = (n_sequences // world) // micro_batch * micro_batch
    mine = order[rank::world][:per_rank].tolist()
    return [mine[i:i + micro_batch] for i in range(0, per_rank, micro_batch)]


def collate(items: list[dict]) -> dict:
    """Pads to the longest sequence of the batch: [PAD], label ignored, segment 0, position 0."""
    import torch

    length = max(len(x["input_ids"]) for x in items)
    out = {}
    for key, fill in (("input_ids", tokenizer_files.PAD_ID), ("labels", IGNORE_INDEX), ("segment_ids", 0),
                      ("position_ids", 0)):
        arr = np.full((len(items), length), fill, dtype=np.int64)
        for row, x in enumerate(items):
            arr[row, :len(x[key])] = x[key]
        out[key] = torch.from_numpy(arr)
    return out


def attention_masks(segment_ids, *, sliding_window: int | None = None):
    """Block-diagonal boolean masks ``(B, 1, L, L)`` (True = attend): a token sees its own segment
    only; padding sees padding (never an all-False row, which would make SDPA return NaN).
    With ``sliding_window`` (ModernBERT's local layers), also ``|i - j| <= sliding_window``."""
    import torch

    same = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
    if sliding_window is None:
        return same
    idx = torch.arange(segment_ids.shape[1], device=segment_ids.device)
    return same & ((idx[:, None] - idx[None, :]).abs() <= sliding_window)


def mask_bytes(seq_length: int, batch: int = 1, itemsize: int = 1) -> int:
    """Memory of one block-diagonal mask ``(batch, 1, L, L)`` at ``itemsize`` bytes per entry."""
    return batch * seq_length * seq_length * itemsize

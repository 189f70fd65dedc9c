"""BERT instances with next-sentence labels and whole-word masking (SPEC 6.5), or MLM only.

MLM-only presets (``next_sentence_prediction=False``: rinna, ModernBERT-Ja,
bybert) get ``[CLS] A [SEP]`` instances, A being consecutive sentences of one
document up to the length, with no segment B; ``whole_word_masking=False``
masks tokens one by one (as does a tokenizer directory with no word splitter,
whose codes never carry the continuation bit).

The recipe's algorithm (Google's ``create_pretraining_data.py``, as the
reference runs it), reorganised for speed without changing what it produces:

* ``layout`` walks a document's sentences exactly as the recipe does (segment
  target length, A/B split, random next with the unused sentences given back)
  but only records token *ranges* into the flat code array;
* everything after that — truncation, assembly, masking — is done for a whole
  batch of instances at once with numpy.

Random numbers differ from the reference (its single ``random.Random`` stream
cannot be split across processes); the distributions are the same. Every batch
draws from its own generator seeded by (seed, pass, block), so the output does
not depend on how many worker processes make it.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from dataclasses import dataclass

import numpy as np

from components.pretraining_data.documents import Documents
from components.tokenizer import files


@dataclass(frozen=True)
class MaskingConfig:
    max_seq_length: int = 128
    max_predictions: int = 19
    masked_lm_prob: float = 0.15
    short_seq_prob: float = 0.1
    vocab_size: int = 32768
    continuation: int = 1 << 15  # the code bit marking a word-continuing token
    next_sentence_prediction: bool = True
    whole_word_masking: bool = True

    @property
    def max_num_tokens(self) -> int:
        # [CLS] A [SEP] B [SEP], or [CLS] A [SEP]
        return self.max_seq_length - (3 if self.next_sentence_prediction else 2)


@dataclass
class Batch:
    """A batch of finished instances, as arrays (one row per instance)."""

    input_ids: np.ndarray         # [N, max_seq_length], padded with [PAD]
    lengths: np.ndarray           # [N]: tokens incl. [CLS]/[SEP]
    segment_a: np.ndarray         # [N]: tokens of [CLS] A [SEP] (type id 0)
    masked_positions: np.ndarray  # [N, max_predictions], sorted, 0-padded
    masked_ids: np.ndarray        # [N, max_predictions]: original ids, 0-padded
    masked_counts: np.ndarray     # [N]
    random_next: np.ndarray       # [N]: 1 = B is from another document

    def __len__(self) -> int:
        return len(self.lengths)


def layout(docs: Documents, doc_ids, rng: random.Random, config: MaskingConfig) -> np.ndarray:
    """Segment ranges for every instance of ``doc_ids``: rows of (a0, a1, b0, b1, random_next).

    Ranges index ``docs.codes`` before truncation. MLM only: B is empty.
    """
    if not config.next_sentence_prediction:
        return _single_segment_layout(docs, doc_ids, rng, config)
    # memoryviews: indexing them gives Python ints, several times faster than numpy scalars
    sentence_ends, document_ends = memoryview(docs.sentence_ends), memoryview(docs.document_ends)
    num_docs = len(document_ends)
    max_num_tokens = config.max_num_tokens
    rows: list[tuple[int, int, int, int, int]] = []
    uniform = rng.random

    def randint(low: int, high: int) -> int:  # random.randint's range, a fraction of its cost
        return low + int(uniform() * (high - low + 1))

    def sentence_span(doc: int) -> tuple[int, int]:
        return (document_ends[doc - 1] if doc else 0), document_ends[doc]

    short_seq_prob = config.short_seq_prob
    for doc in np.asarray(doc_ids).tolist():
        s_lo, s_hi = sentence_span(doc)
        ends = sentence_ends[s_lo:s_hi].tolist()
        starts = [sentence_ends[s_lo - 1] if s_lo else 0, *ends[:-1]]
        target = max_num_tokens
        if uniform() < short_seq_prob:
            target = randint(2, max_num_tokens)
        n = len(ends)
        first = 0
        while first < n:
            # The recipe adds sentences until the chunk reaches the target or the document ends:
            # the first sentence whose end is that far (a binary search, not a loop per sentence).
            last = min(bisect_left(ends, starts[first] + target, first), n - 1)
            chunk_n = last - first + 1
            a_end = randint(1, chunk_n - 1) if chunk_n >= 2 else 1
            a0, a1 = starts[first], ends[first + a_end - 1]
            if chunk_n == 1 or uniform() < 0.5:
                target_b = target - (a1 - a0)
                for _ in range(10):
                    other = randint(0, num_docs - 1)
                    if other != doc:
                        break
                o_lo, o_hi = sentence_span(other)
                j = randint(o_lo, o_hi - 1)
                b0 = sentence_ends[j - 1] if j else 0
                j = bisect_left(sentence_ends, b0 + target_b, j, o_hi - 1)  # sentences until B is long enough
                rows.append((a0, a1, b0, sentence_ends[j], 1))
                last -= chunk_n - a_end  # the unused sentences go back
            else:
                rows.append((a0, a1, a1, ends[last], 0))
            first = last + 1
    return np.array(rows, dtype=np.int64).reshape(-1, 5)


def _single_segment_layout(docs: Documents, doc_ids, rng: random.Random, config: MaskingConfig) -> np.ndarray:
    """MLM only: each instance is the next run of whole sentences reaching the target length.

    The target is the recipe's (``short_seq_prob`` of them shorter); a run
    longer than the instance is truncated later like any segment.
    """
    sentence_ends, document_ends = memoryview(docs.sentence_ends), memoryview(docs.document_ends)
    max_num_tokens = config.max_num_tokens
    uniform = rng.random
    rows: list[tuple[int, int, int, int, int]] = []
    for doc in np.asarray(doc_ids).tolist():
        s_lo, s_hi = (document_ends[doc - 1] if doc else 0), document_ends[doc]
        target = max_num_tokens
        if uniform() < config.short_seq_prob:
            target = 2 + int(uniform() * (max_num_tokens - 1))
        start = sentence_ends[s_lo - 1] if s_lo else 0
        j = s_lo
        while j < s_hi:
            j = bisect_left(sentence_ends, start + target, j, s_hi - 1)  # the first sentence reaching the target
            end = sentence_ends[j]
            rows.append((start, end, end, end, 0))
            start, j = end, j + 1
    return np.array(rows, dtype=np.int64).reshape(-1, 5)


def truncated_lengths(len_a: np.ndarray, len_b: np.ndarray, max_num_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Lengths after the recipe's loop "drop one token from the longer side (B on ties)"."""
    excess = np.maximum(len_a + len_b - max_num_tokens, 0)
    first = np.minimum(np.abs(len_a - len_b), excess)  # evens out the longer side
    a = len_a - np.where(len_a > len_b, first, 0)
    b = len_b - np.where(len_a > len_b, 0, first)
    rest = excess - first  # then B and A alternately, B first
    return a - rest // 2, b - (rest + 1) // 2


def make_batch(docs: Documents, ranges: np.ndarray, rng: np.random.Generator, config: MaskingConfig) -> Batch:
    """Truncates, assembles and masks the instances whose ranges ``layout`` gave."""
    a0, a1, b0, b1, random_next = (ranges[:, k] for k in range(5))
    len_a, len_b = truncated_lengths(a1 - a0, b1 - b0, config.max_num_tokens)
    # Each dropped token comes off the front or the back with probability 1/2.
    a0 = a0 + rng.binomial(a1 - a0 - len_a, 0.5)
    b0 = b0 + rng.binomial(b1 - b0 - len_b, 0.5)

    n_rows, width = len(ranges), config.max_seq_length
    index = np.int32 if len(docs.codes) < 1 << 31 else np.int64
    col = np.arange(width, dtype=index)[None, :]
    la, lb = len_a[:, None].astype(index), len_b[:, None].astype(index)
    in_a = (col >= 1) & (col <= la)
    candidate = in_a | ((col >= la + 2) & (col <= la + lb + 1))
    # Position -> offset in docs.codes: A's tokens, then B's (garbage outside, masked below).
    source = col + np.where(in_a, (a0 - 1)[:, None].astype(index), (b0[:, None] - 2).astype(index) - la)
    codes = docs.codes.take(source, mode="clip")
    codes *= candidate  # [PAD] (id 0) where no token is
    rows = np.arange(n_rows, dtype=index)
    row_start = (rows * width)[:, None]
    codes[:, 0] = files.CLS_ID
    codes[rows, len_a + 1] = files.SEP_ID
    if config.next_sentence_prediction:
        codes[rows, len_a + len_b + 2] = files.SEP_ID
        lengths = len_a + len_b + 3
    else:  # B is empty
        lengths = len_a + 2

    # Whole-word groups: a continuation token joins the group before it (even
    # across the middle [SEP], as in the recipe); [CLS]/[SEP] are never candidates.
    is_cont = codes >= config.continuation  # the top bit of the code type
    if not config.whole_word_masking:
        is_cont[:] = False
    starts = candidate & (~is_cont | (col == 1))
    group = np.cumsum(starts, axis=1, dtype=index) - 1
    n_groups = group[:, -1] + 1  # the last group's index + 1 (no bool sum)
    # Flat group indexes. Before a row's first group (its [CLS]) this is the previous row's last
    # slot, or -1 (the last slot) in row 0: valid indexes, and never a candidate's.
    flat_group = group + row_start
    # np.compress on flat arrays: several times faster than a 2-D boolean index
    sizes = np.bincount(np.compress(candidate.ravel(), flat_group.ravel()), minlength=n_rows * width)
    # The groups in random order (the recipe shuffles them), in as many columns as the most groups.
    most = max(int(n_groups.max(initial=0)), 1)
    keys = rng.random((n_rows, most), dtype=np.float32)
    valid_group = col[:, :most] < n_groups[:, None]
    np.putmask(keys, ~valid_group, 2.0)
    order = np.argsort(keys, axis=1) + row_start  # flat indexes: cheaper than take_along_axis
    sorted_sizes = sizes.ravel()[order]
    # Valid keys are in [0, 1), the others 2: sorted, each row's valid groups come first, so the
    # sorted validity is ``valid_group`` itself.
    sorted_valid = valid_group

    to_predict = np.minimum(config.max_predictions,
                            np.maximum(1, np.rint(lengths * config.masked_lm_prob).astype(np.int64)))
    taken = _greedy_fill(sorted_sizes, sorted_valid, to_predict)

    taken_by_group = np.zeros(n_rows * width, dtype=bool)
    taken_by_group[order] = taken
    masked = candidate & taken_by_group[flat_group]

    ids = codes & docs.codes.dtype.type(config.continuation - 1)
    flat = np.flatnonzero(masked)  # row-major: positions sorted per row
    m_rows, m_cols = np.divmod(flat, width)
    flat_ids = ids.reshape(-1)  # a view: ids is a new contiguous array
    labels = flat_ids[flat]
    # 80% [MASK], 10% the original token, 10% a random vocabulary token.
    u = rng.random(len(flat))
    random_ids = rng.integers(0, config.vocab_size, len(flat))
    flat_ids[flat] = np.where(u < 0.8, files.MASK_ID, np.where(u < 0.9, labels, random_ids))

    counts = np.bincount(m_rows, minlength=n_rows)
    slot = np.arange(len(m_rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    positions = np.zeros((n_rows, config.max_predictions), dtype=np.int64)
    masked_ids = np.zeros((n_rows, config.max_predictions), dtype=np.int64)
    positions[m_rows, slot] = m_cols
    masked_ids[m_rows, slot] = labels
    return Batch(input_ids=ids, lengths=lengths, segment_a=len_a + 2, masked_positions=positions,
                 masked_ids=masked_ids, masked_counts=counts, random_next=random_next)


def _greedy_fill(sizes: np.ndarray, valid: np.ndarray, to_predict: np.ndarray) -> np.ndarray:
    """Which groups (in shuffled order) the recipe masks.

    The recipe walks the shuffled groups, skipping any group that would take the
    count past ``to_predict``, until the count reaches it. The walk up to the
    first skip is a prefix of the running sum (at most ``max(to_predict)``
    groups long); the rest is done a step at a time for the rows with room left.
    """
    n_rows, n_groups = sizes.shape
    head = min(n_groups, int(to_predict.max(initial=0)) + 1)
    running = np.cumsum(sizes[:, :head], axis=1)
    prefix = (running <= to_predict[:, None]) & valid[:, :head]  # valid groups come first in each row
    taken = np.zeros((n_rows, n_groups), dtype=bool)
    taken[:, :head] = prefix
    room = to_predict - np.where(prefix, running, 0).max(axis=1, initial=0)
    active = np.nonzero(room > 0)[0]
    if not len(active):
        return taken
    sizes, room = np.where(valid[active], sizes[active], n_groups + 1), room[active]  # invalid: never fits
    start = prefix[active].sum(axis=1) + 1  # the first group after the one skipped
    col = np.arange(n_groups)[None, :]
    rows = np.arange(len(active))
    while len(rows):
        fits = (sizes[rows] <= room[rows, None]) & (col >= start[rows, None])
        found = fits.any(axis=1)
        rows, fits = rows[found], fits[found]
        if not len(rows):
            break
        j = fits.argmax(axis=1)
        taken[active[rows], j] = True
        room[rows] -= sizes[rows, j]
        start[rows] = j + 1
        rows = rows[room[rows] > 0]
    return taken

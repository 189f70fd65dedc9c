"""Synthetic pretraining inputs of the right shapes, for the training benchmark and tests.

Training speed does not depend on what the tokens are, only on the shapes; these let
``bertja bench train`` measure a stage without first building corpora and tokenizers.
Written with TensorFlow's own ``tf.train.Example`` and ``TFRecordWriter`` (local paths only).
"""

from __future__ import annotations

import numpy as np

from components.tokenizer import files as tokenizer_files

_FIRST_CJK = 0x4E00  # 20,992 CJK ideographs, then their ## forms: enough for 32,768 tokens


def write_tokenizer_dir(output_dir: str, *, vocab_size: int, subword_tokenizer_type: str = "wordpiece") -> str:
    """A tokenizer dir with ``vocab_size`` distinct tokens after the reserved ones."""
    head = tokenizer_files.reserved_tokens()
    chars = [chr(_FIRST_CJK + i) for i in range(20992)]
    pool = chars + [tokenizer_files.CONTINUATION_PREFIX + c for c in chars]
    if vocab_size < len(head) + 1 or vocab_size > len(head) + len(pool):
        raise ValueError(f"vocab_size={vocab_size}: between {len(head) + 1} and {len(head) + len(pool)}")
    tokenizer_files.write_tokenizer_dir(output_dir, head + pool[:vocab_size - len(head)],
                                        subword_tokenizer_type=subword_tokenizer_type)
    return output_dir


def write_records(path: str, *, count: int, seq_length: int, max_predictions: int, vocab_size: int,
                  seed: int = 0) -> str:
    """GZIP TFRecords of masked-LM instances with Model Garden v2 feature names.

    Each instance is ``[CLS] A [SEP] B [SEP]`` of random length (half to full), with about 15% of
    positions masked and a random next-sentence label, like ``bertja pretraining-data`` output.
    """
    import tensorflow as tf

    rng = np.random.default_rng(seed)

    def ints(values) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))

    def padded(values: np.ndarray, n: int) -> np.ndarray:
        return np.concatenate([values, np.zeros(n - len(values), values.dtype)])

    first_id = len(tokenizer_files.reserved_tokens())
    positions_all = np.arange(seq_length)
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for _ in range(count):
            used = int(rng.integers(seq_length // 2, seq_length + 1))
            split = used // 2
            ids = np.zeros(seq_length, np.int64)
            ids[:used] = rng.integers(first_id, vocab_size, used)
            ids[[0, split, used - 1]] = (tokenizer_files.CLS_ID, tokenizer_files.SEP_ID, tokenizer_files.SEP_ID)
            candidates = np.setdiff1d(np.arange(1, used - 1), [split])
            k = min(max_predictions, max(1, round(used * 0.15)), len(candidates))
            masked = np.sort(rng.choice(candidates, k, replace=False))
            labels = ids[masked]
            ids[masked] = tokenizer_files.MASK_ID
            feature = {
                "input_word_ids": ints(ids),
                "input_mask": ints(positions_all < used),
                "input_type_ids": ints((positions_all > split) & (positions_all < used)),
                "masked_lm_positions": ints(padded(masked, max_predictions)),
                "masked_lm_ids": ints(padded(labels, max_predictions)),
                "masked_lm_weights": tf.train.Feature(float_list=tf.train.FloatList(
                    value=[1.0] * k + [0.0] * (max_predictions - k))),
                "next_sentence_labels": ints([rng.integers(0, 2)]),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return path

"""The step: one corpus shard -> GZIP TFRecords of masked-LM/NSP instances + a summary.

Streaming: documents are tokenized into flat arrays (``documents``), then for
each of ``dupe_factor`` passes the documents are visited in a fresh random
order, in units of ``shuffle_documents``; a unit's instances are made and masked
in blocks, shuffled together, serialized and compressed (in worker processes when
``workers`` > 1), and the parent only appends the compressed parts to the files.
Instances are never all in memory: a few units at a time.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from contextlib import ExitStack

import numpy as np

from components import storage
from components.errors import BadInput
from components.pretraining_data import instances, tfrecord
from components.pretraining_data.documents import Documents, read_documents
from components.parallel import ordered_map
from components.pretraining_data.tokenization import load_tokenizer
from components.progress import Progress

BLOCK_DOCUMENTS = 64        # documents masked as one batch (fixed: output must not depend on workers)
SHUFFLE_DOCUMENTS = 1024    # documents per unit of work, whose instances are shuffled together
TFRECORD_SUFFIX = ".tfrecord.gz"
SUMMARY_SUFFIX = ".summary.json"


def shard_seed(base_seed: int, shard: int | str) -> int:
    """A per-shard seed from one base seed and the shard's index or name (stable across runs)."""
    digest = hashlib.sha256(f"{int(base_seed)}/{shard}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _stem(output_uri: str) -> str:
    return output_uri[:-len(TFRECORD_SUFFIX)] if output_uri.endswith(TFRECORD_SUFFIX) else output_uri


def output_uris(output_uri: str, num_output_files: int = 1) -> list[str]:
    """The data files: ``OUTPUT`` itself, or ``STEM-00000-of-0000K.tfrecord.gz`` for K > 1."""
    if num_output_files == 1:
        if not output_uri.endswith(TFRECORD_SUFFIX):
            raise BadInput(f"output {output_uri!r}: must end with {TFRECORD_SUFFIX} (the files are GZIP TFRecords)")
        return [output_uri]
    stem = _stem(output_uri)
    return [f"{stem}-{i:05d}-of-{num_output_files:05d}{TFRECORD_SUFFIX}" for i in range(num_output_files)]


def summary_uri(output_uri: str) -> str:
    """The JSON summary beside the output: ``STEM.summary.json`` (STEM = output less ``.tfrecord.gz``)."""
    return _stem(output_uri) + SUMMARY_SUFFIX


def _check(name: str, ok: bool, rule: str, value) -> None:
    if not ok:
        raise BadInput(f"{name}={value!r}: {rule}")


# Worker-process state, set once per process (forked: shared, not copied).
_STATE: dict = {}


def _set_state(docs: Documents, config: instances.MaskingConfig, seed: int, num_files: int) -> None:
    _STATE.update(docs=docs, config=config, seed=seed, num_files=num_files)


def _make_unit(unit: tuple[int, int, np.ndarray]) -> tuple[list[tfrecord.DeflatedPart], np.ndarray]:
    """One unit of work: the instances of a run of documents of one pass, made block by block,
    shuffled together, framed and compressed (part ``p`` holds records ``p, p + K, ...`` of the
    shuffled unit, K = output files), with (instances, tokens, masked tokens, random next)."""
    pass_index, unit_index, doc_ids = unit
    docs, config, seed, num_files = _STATE["docs"], _STATE["config"], _STATE["seed"], _STATE["num_files"]
    examples: list[bytes] = []
    stats = np.zeros(4, dtype=np.int64)
    for block, start in enumerate(range(0, len(doc_ids), BLOCK_DOCUMENTS)):
        key = (pass_index, unit_index, block)
        ranges = instances.layout(docs, doc_ids[start:start + BLOCK_DOCUMENTS],
                                  random.Random(f"{seed}:{pass_index}:{unit_index}:{block}"), config)
        if not len(ranges):
            continue
        batch = instances.make_batch(docs, ranges, np.random.default_rng([seed, 2, *key]), config)
        stats += (len(batch), batch.lengths.sum(), batch.masked_counts.sum(), batch.random_next.sum())
        examples += tfrecord.batch_examples(batch, config.vocab_size, config.next_sentence_prediction)
    order = np.random.default_rng([seed, 3, pass_index, unit_index]).permutation(len(examples)).tolist()
    return [tfrecord.deflate_records(list(map(examples.__getitem__, order[p::num_files])))
            for p in range(num_files)], stats


def _units(num_docs: int, dupe_factor: int, seed: int, unit_documents: int):
    for pass_index in range(dupe_factor):
        order = np.random.default_rng([seed, 1, pass_index]).permutation(num_docs)
        for unit, start in enumerate(range(0, num_docs, unit_documents)):
            yield pass_index, unit, order[start:start + unit_documents]


def create_pretraining_data(input_uri: str, output_uri: str, vocab_dir: str, *, max_seq_length: int = 128,
                            max_predictions: int = 19, dupe_factor: int = 5, masked_lm_prob: float = 0.15,
                            short_seq_prob: float = 0.1, seed: int = 12345, do_lower_case: bool | None = None,
                            workers: int = 1, num_output_files: int = 1,
                            shuffle_documents: int = SHUFFLE_DOCUMENTS, whole_word_masking: bool = True,
                            next_sentence_prediction: bool = True, words: bool = False) -> dict:
    """Writes the shard's instances as GZIP TFRecords (v2 feature names) and returns the summary.

    ``do_lower_case=None`` takes it from the vocab dir's tokenizer_config.json.
    ``next_sentence_prediction=False``: MLM only (``[CLS] A [SEP]``, no
    ``next_sentence_labels``). Words for whole-word masking come from the
    tokenizer directory (``bertja_tokenizer.json``); without a word splitter,
    or with ``whole_word_masking=False``, tokens are masked one by one.
    ``words``: ``input_uri`` is the shard's word-split file (``bertja split-words``):
    no MeCab here, and the same bytes out as from the text.
    The summary is also written to ``summary_uri(output_uri)``. The same inputs
    and seed give byte-identical files, whatever ``workers`` is.
    """
    started = time.monotonic()
    if next_sentence_prediction:
        _check("max_seq_length", max_seq_length >= 5, "must be >= 5 ([CLS] A [SEP] B [SEP])", max_seq_length)
    else:
        _check("max_seq_length", max_seq_length >= 3, "must be >= 3 ([CLS] A [SEP])", max_seq_length)
    _check("max_predictions", max_predictions >= 1, "must be >= 1", max_predictions)
    _check("dupe_factor", dupe_factor >= 1, "must be >= 1", dupe_factor)
    _check("masked_lm_prob", 0 < masked_lm_prob <= 1, "must be in (0, 1]", masked_lm_prob)
    _check("short_seq_prob", 0 <= short_seq_prob <= 1, "must be in [0, 1]", short_seq_prob)
    _check("seed", seed >= 0, "must be >= 0", seed)
    _check("workers", workers >= 1, "must be >= 1", workers)
    _check("num_output_files", num_output_files >= 1, "must be >= 1", num_output_files)
    _check("shuffle_documents", shuffle_documents >= 1, "must be >= 1", shuffle_documents)
    outputs = output_uris(output_uri, num_output_files)
    storage.check_outputs([input_uri, vocab_dir], files=[*outputs, summary_uri(output_uri)])
    tokenizer = load_tokenizer(vocab_dir, do_lower_case)

    docs, read = read_documents(input_uri, tokenizer, workers=workers, words=words)
    tokenized = time.monotonic()
    if not len(docs):
        raise BadInput(f"{input_uri}: no sentences with tokens ({read.input_lines} lines read); "
                       "an empty shard gives no pretraining data")

    config = instances.MaskingConfig(max_seq_length=max_seq_length, max_predictions=max_predictions,
                                     masked_lm_prob=masked_lm_prob, short_seq_prob=short_seq_prob,
                                     vocab_size=tokenizer.vocab_size, continuation=tokenizer.continuation,
                                     next_sentence_prediction=bool(next_sentence_prediction),
                                     whole_word_masking=bool(whole_word_masking))
    totals = np.zeros(4, dtype=np.int64)  # instances, tokens, masked tokens, random next
    progress = Progress("pretraining-data: instances", "instances")
    with ExitStack() as stack:
        writers = [stack.enter_context(tfrecord.open_gzip_records(uri)) for uri in outputs]
        for parts, stats in ordered_map(_make_unit, _units(len(docs), dupe_factor, seed, shuffle_documents),
                                        workers=workers, initializer=_set_state,
                                        initargs=(docs, config, seed, len(writers))):
            # Round robin over the files, as the reference does: record j of the unit is record
            # totals[0] + j of the shard, so part p (j = p mod K) goes on in file (totals[0] + p) mod K.
            for p, part in enumerate(parts):
                writers[(int(totals[0]) + p) % len(writers)].write(part)
            totals += stats
            progress.add(int(stats[0]))
        output_instances = [writer.records for writer in writers]
    progress.done()

    n_instances, n_tokens, n_masked, n_random = (int(x) for x in totals)
    summary = {
        "input": input_uri,
        "input_words": bool(words),
        "outputs": outputs,
        "output_instances": output_instances,
        "instances": n_instances,
        "tokens": n_tokens,
        "masked_tokens": n_masked,
        "random_next": n_random,
        "mean_tokens_per_instance": n_tokens / max(n_instances, 1),
        "mean_masked_per_instance": n_masked / max(n_instances, 1),
        "random_next_rate": n_random / max(n_instances, 1),
        "documents": len(docs),
        "sentences": docs.num_sentences,
        "input_tokens": docs.num_tokens,
        "document_bytes": docs.nbytes(),
        "input_lines": read.input_lines,
        "lines_without_tokens": read.lines_without_tokens,
        "seed": seed,
        "max_seq_length": max_seq_length,
        "max_predictions": max_predictions,
        "dupe_factor": dupe_factor,
        "masked_lm_prob": masked_lm_prob,
        "short_seq_prob": short_seq_prob,
        "do_lower_case": tokenizer.do_lower_case,
        "subword_tokenizer_type": tokenizer.type,
        "vocab_size": tokenizer.vocab_size,
        "next_sentence_prediction": bool(next_sentence_prediction),
        "whole_word_masking": bool(whole_word_masking),
        "workers": workers,
        "tokenize_seconds": round(tokenized - started, 3),
        "seconds": round(time.monotonic() - started, 3),
    }
    storage.write_text(summary_uri(output_uri), json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
    _prune_earlier_outputs(output_uri, outputs)
    return summary


def _prune_earlier_outputs(output_uri: str, outputs: list[str]) -> None:
    """Removes the data files an earlier run with another ``num_output_files`` left beside
    these (``STEM.tfrecord.gz``, ``STEM-0000i-of-0000K.tfrecord.gz``): a glob then sees this
    run's files only. Files of other stems and other names are never touched."""
    stem = _stem(output_uri)
    pattern = re.escape(storage.basename(stem)) + r"(-\d{5}-of-\d{5})?" + re.escape(TFRECORD_SUFFIX)
    storage.prune(storage.dirname(stem), pattern, keep=outputs)

"""MLM-only instances and per-token masking, for every tokenizer type (the seed family's objectives)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from test_pretraining_data import CORPUS, build_vocab_dir

from components import storage
from components.errors import BadInput
from components.mecab import WordSplitter
from components.pretraining_data.create import create_pretraining_data
from components.pretraining_data.tokenization import load_tokenizer
from components.tokenizer import files
from components.tokenizer.byte import BYTE_OFFSET, write_byte_tokenizer
from components.tokenizer.sentencepiece import train_sentencepiece

SEQ, PRED = 128, 20


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tokenizers")
    out = {"wordpiece": build_vocab_dir(root / "wordpiece", "wordpiece")}
    out["sentencepiece"] = str(root / "sp")
    train_sentencepiece([str(CORPUS)], out["sentencepiece"], vocab_size=8000, byte_fallback=True,
                        do_lower_case=True, workers=2)
    out["byte"] = str(root / "byte")
    write_byte_tokenizer(out["byte"], mecab_dic="unidic_lite")
    return out


def documents(limit: int = 40) -> list[list[str]]:
    docs, current = [], []
    with open(CORPUS, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                current.append(line.strip())
            elif current:
                docs.append(current)
                current = []
    return (docs + [current] if current else docs)[:limit]


def small_corpus(path) -> str:
    path.write_text("\n\n".join("\n".join(d) for d in documents()) + "\n", encoding="utf-8")
    return str(path)


def read_mlm_records(path: str, seq: int = SEQ, pred: int = PRED) -> dict[str, np.ndarray]:
    """Model Garden's own loader spec with use_next_sentence_label=False."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    from official.nlp.data import pretrain_dataloader

    config = pretrain_dataloader.BertPretrainDataConfig(
        input_path=path, seq_length=seq, max_predictions_per_seq=pred, use_v2_feature_names=True,
        file_type="tfrecord_compressed", global_batch_size=1, is_training=False, use_next_sentence_label=False)
    spec = pretrain_dataloader.BertPretrainDataLoader(config)._name_to_features()
    assert "next_sentence_labels" not in spec
    records = list(tf.data.TFRecordDataset(path, compression_type="GZIP"))
    for record in records[:50]:  # nothing beyond the MLM features is in a record
        example = tf.train.Example.FromString(record.numpy())
        assert set(example.features.feature) == set(spec)
    parsed = tf.io.parse_example(tf.stack(records), spec)
    return {name: parsed[name].numpy() for name in spec}


@pytest.mark.parametrize("kind", ["wordpiece", "sentencepiece", "byte"])
def test_mlm_only_instances_are_one_segment_of_consecutive_sentences(dirs, kind, tmp_path):
    corpus = small_corpus(tmp_path / "c.txt")
    out = str(tmp_path / "o.tfrecord.gz")
    summary = create_pretraining_data(corpus, out, dirs[kind], max_seq_length=SEQ, max_predictions=PRED,
                                      dupe_factor=2, next_sentence_prediction=False, workers=2)
    assert summary["next_sentence_prediction"] is False and summary["random_next"] == 0
    r = read_mlm_records(out)
    n = len(r["input_word_ids"])
    assert n == summary["instances"] > 0
    assert not r["input_type_ids"].any()  # no segment B: type ids all 0
    tokenizer = load_tokenizer(dirs[kind])
    mask = ~np.uint64(tokenizer.continuation)
    doc_ids = [np.array([c & int(mask) for line in d for c in tokenizer.codes(line)]) for d in documents()]
    for i in range(n):
        length = int(r["input_mask"][i].sum())
        ids = r["input_word_ids"][i, :length].copy()
        count = int(r["masked_lm_weights"][i].sum())
        positions = r["masked_lm_positions"][i, :count]
        ids[positions] = r["masked_lm_ids"][i, :count]
        assert ids[0] == files.CLS_ID and ids[-1] == files.SEP_ID
        assert (ids[1:-1] != files.SEP_ID).all() and (r["input_word_ids"][i, length:] == files.PAD_ID).all()
        body = ids[1:-1]
        # The unmasked body is a contiguous stretch of one document's tokens.
        assert any(_contains(doc, body) for doc in doc_ids), i
        assert length <= SEQ and 1 <= count <= PRED
    mean_length = r["input_mask"].sum(axis=1).mean()
    assert mean_length > 0.6 * SEQ  # filled with consecutive sentences (documents end short), not one each
    assert 0.13 < r["masked_lm_weights"].sum() / r["input_mask"].sum() < 0.17


def _contains(doc: np.ndarray, body: np.ndarray) -> bool:
    return _find(doc, body) is not None


def _find(doc: np.ndarray, body: np.ndarray) -> int | None:
    if len(body) > len(doc):
        return None
    starts = np.nonzero(doc[:len(doc) - len(body) + 1] == body[0])[0]
    return next((int(s) for s in starts if (doc[s:s + len(body)] == body).all()), None)


def test_sentencepiece_codes_are_the_auto_tokenizer_ids_with_no_word_groups(dirs):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(dirs["sentencepiece"])
    tokenizer = load_tokenizer(dirs["sentencepiece"])
    assert tokenizer.type == "sentencepiece" and tokenizer.do_lower_case
    for line in [s for d in documents(20) for s in d] + ["ＡＢＣ😀 ｶﾀｶﾅ"]:
        codes = tokenizer.codes(line)
        assert codes == hf(line, add_special_tokens=False)["input_ids"]  # no continuation bit: per-token groups


def test_byte_codes_group_the_bytes_of_mecab_words(dirs):
    tokenizer = load_tokenizer(dirs["byte"])
    words = WordSplitter("unidic_lite")
    cont = tokenizer.continuation
    for line in [s for d in documents(20) for s in d] + ["東京  タワー　に行く"]:
        codes = tokenizer.codes(line)
        assert [c & (cont - 1) for c in codes] == [BYTE_OFFSET + b for b in line.encode("utf-8")]
        groups, current = [], b""
        for c in codes:
            if not c & cont and current:
                groups.append(current)
                current = b""
            current += bytes([(c & (cont - 1)) - BYTE_OFFSET])
        groups.append(current)
        texts = [g.decode("utf-8") for g in groups]  # groups never split a character
        assert [t for t in texts if not t.isspace()] == [n.surface for n in words._tagger(line)
                                                        if not n.surface.isspace()]


def test_whole_word_masking_off_masks_single_tokens(dirs, tmp_path):
    corpus = small_corpus(tmp_path / "c.txt")
    tokenizer = load_tokenizer(dirs["byte"])
    cont = tokenizer.continuation
    doc_codes = [np.array([c for line in d for c in tokenizer.codes(line)]) for d in documents()]
    partial = {}
    for wwm in (True, False):
        out = str(tmp_path / f"{wwm}.tfrecord.gz")
        create_pretraining_data(corpus, out, dirs["byte"], max_seq_length=SEQ, max_predictions=PRED, dupe_factor=1,
                                next_sentence_prediction=False, whole_word_masking=wwm, seed=3)
        r = read_mlm_records(out)
        # Where a masked byte's neighbour in the same word is unmasked, the word was masked in part.
        cut = 0
        for i in range(len(r["input_word_ids"])):
            count = int(r["masked_lm_weights"][i].sum())
            ids = r["input_word_ids"][i].copy()
            pos = r["masked_lm_positions"][i, :count]
            ids[pos] = r["masked_lm_ids"][i, :count]
            length = int(r["input_mask"][i].sum())
            body = ids[1:length - 1]
            doc, start = next((d, s) for d in doc_codes if (s := _find(d % cont, body)) is not None)
            is_cont = np.array([False, *(doc[start:start + len(body)] >= cont), False])
            is_cont[1] = False  # a truncated word's first byte in the instance starts its group
            masked = np.zeros(len(ids), bool)
            masked[pos] = True
            cut += int(((masked[1:length] != masked[:length - 1]) & is_cont[1:length]).sum())
        partial[wwm] = cut
    assert partial[True] == 0 and partial[False] > 100


def test_v3_wordpiece_without_whole_word_masking_or_nsp(dirs, tmp_path):
    """The same switches on the recipe's own tokenizer: NSP stays the recipe's, only the masking changes."""
    corpus = small_corpus(tmp_path / "c.txt")
    with_wwm = create_pretraining_data(corpus, str(tmp_path / "a.tfrecord.gz"), dirs["wordpiece"], dupe_factor=1)
    without = create_pretraining_data(corpus, str(tmp_path / "b.tfrecord.gz"), dirs["wordpiece"], dupe_factor=1,
                                      whole_word_masking=False)
    assert with_wwm["instances"] == without["instances"] and with_wwm["random_next"] == without["random_next"]
    assert storage.read_bytes(str(tmp_path / "a.tfrecord.gz")) != storage.read_bytes(str(tmp_path / "b.tfrecord.gz"))


def test_objective_bad_input(dirs, tmp_path):
    corpus = small_corpus(tmp_path / "c.txt")
    with pytest.raises(BadInput, match="max_seq_length=4: must be >= 5"):
        create_pretraining_data(corpus, str(tmp_path / "o.tfrecord.gz"), dirs["wordpiece"], max_seq_length=4)
    create_pretraining_data(corpus, str(tmp_path / "o.tfrecord.gz"), dirs["wordpiece"], max_seq_length=4,
                            next_sentence_prediction=False, dupe_factor=1)
    with pytest.raises(BadInput, match="lowercases its input itself"):
        create_pretraining_data(corpus, str(tmp_path / "p.tfrecord.gz"), dirs["sentencepiece"], do_lower_case=False)

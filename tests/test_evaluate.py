"""Evaluation: fill-mask, held-out masked-LM metrics from TFRecords (read without TensorFlow),
fine-tuning, on a small Hugging Face BERT with a real BertJapaneseTokenizer (MeCab + characters)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from components import storage
from components.errors import BadInput
from components import tfrecord
from components.evaluate import core
from components.evaluate.metrics import macro_f1
from components.tokenizer import files as tokenizer_files
from tiny_bert import make_tiny_bert

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENTENCES = os.path.join(REPO, "tests", "data", "ja_sentences.txt")
SEQ, PREDS = 24, 4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A small random BertForPreTraining with a character BertJapaneseTokenizer."""
    with open(SENTENCES, encoding="utf-8") as f:
        return make_tiny_bert(str(tmp_path_factory.mktemp("model")), f.readlines())


def _examples(vocab_size: int, count: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        n = int(rng.integers(8, SEQ + 1))
        ids = [2, *rng.integers(15, vocab_size, n - 2).tolist(), 3] + [0] * (SEQ - n)
        k = min(PREDS, i % PREDS + 1)  # 1..4 real predictions, the rest padding
        positions = sorted(rng.choice(np.arange(1, n - 1), size=k, replace=False).tolist())
        out.append({"input_word_ids": ids, "input_mask": [1] * n + [0] * (SEQ - n),
                    "input_type_ids": [0] * SEQ, "masked_lm_positions": positions + [0] * (PREDS - k),
                    "masked_lm_ids": [ids[p] for p in positions] + [0] * (PREDS - k),
                    "masked_lm_weights": [1.0] * k + [0.0] * (PREDS - k),
                    "next_sentence_labels": [i % 2]})
    return out


def _write_with_tensorflow(path: str, examples: list[dict], gzip_it: bool = True) -> None:
    import tensorflow as tf

    def feature(values):
        if isinstance(values[0], float):
            return tf.train.Feature(float_list=tf.train.FloatList(value=values))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    with tf.io.TFRecordWriter(path, options="GZIP" if gzip_it else None) as writer:
        for ex in examples:
            writer.write(tf.train.Example(features=tf.train.Features(
                feature={k: feature(v) for k, v in ex.items()})).SerializeToString())


def _model_predictions(model_dir: str, examples: list[dict]):
    """The model's own argmax at each masked position and for NSP, computed one example at a time."""
    import torch
    from transformers import BertForPreTraining

    model = BertForPreTraining.from_pretrained(model_dir).eval()
    mlm, nsp = [], []
    with torch.no_grad():
        for ex in examples:
            out = model(input_ids=torch.tensor([ex["input_word_ids"]]),
                        attention_mask=torch.tensor([ex["input_mask"]]),
                        token_type_ids=torch.tensor([ex["input_type_ids"]]))
            mlm.append(out.prediction_logits[0, ex["masked_lm_positions"]].argmax(-1).tolist())
            nsp.append(int(out.seq_relationship_logits[0].argmax()))
    return mlm, nsp


def test_tfrecord_reader_reads_what_tensorflow_writes(tmp_path):
    examples = _examples(100, 5)
    examples[0]["note"] = [b"\xe3\x81\x82bytes"]  # a bytes feature too
    import tensorflow as tf

    for gzip_it, name in ((True, "a.tfrecord.gz"), (False, "b.tfrecord")):
        path = str(tmp_path / name)
        with tf.io.TFRecordWriter(path, options="GZIP" if gzip_it else None) as writer:
            for ex in examples:
                feats = {}
                for k, v in ex.items():
                    if isinstance(v[0], bytes):
                        feats[k] = tf.train.Feature(bytes_list=tf.train.BytesList(value=v))
                    elif isinstance(v[0], float):
                        feats[k] = tf.train.Feature(float_list=tf.train.FloatList(value=v))
                    else:
                        feats[k] = tf.train.Feature(int64_list=tf.train.Int64List(value=v))
                writer.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())
        assert [dict(ex) for ex in tfrecord.iter_examples(path)] == examples


def test_corrupt_and_truncated_tfrecords_name_the_record(tmp_path):
    plain = str(tmp_path / "x.tfrecord")
    _write_with_tensorflow(plain, _examples(100, 3), gzip_it=False)
    data = bytearray(open(plain, "rb").read())
    record_len = len(data) // 3
    data[record_len + 20] ^= 0x01  # inside the second record's payload
    open(plain, "wb").write(bytes(data))
    with pytest.raises(BadInput, match=r"x\.tfrecord: record 2: corrupt data"):
        list(tfrecord.iter_examples(plain))

    gz = str(tmp_path / "y.tfrecord.gz")
    _write_with_tensorflow(gz, _examples(100, 3))
    blob = open(gz, "rb").read()
    open(gz, "wb").write(blob[: len(blob) - 30])
    with pytest.raises(BadInput, match=r"y\.tfrecord\.gz: record \d: .*(truncated|corrupt)"):
        list(tfrecord.iter_examples(gz))


def test_masked_lm_and_nsp_metrics_count_only_real_predictions(model_dir, tmp_path):
    vocab = len(tokenizer_files.read_tokens(os.path.join(model_dir, "vocab.txt")))
    examples = _examples(vocab, 20)
    mlm, nsp = _model_predictions(model_dir, examples)
    right = wrong = 0
    for i, ex in enumerate(examples):
        for j, weight in enumerate(ex["masked_lm_weights"]):
            # Real predictions: the model's answer on even examples, a wrong one on odd examples.
            # Padding predictions get the model's answer, so counting them would raise the accuracy.
            correct = weight == 0.0 or i % 2 == 0
            ex["masked_lm_ids"][j] = mlm[i][j] if correct else (mlm[i][j] + 1) % vocab
            if weight:
                right, wrong = right + correct, wrong + (not correct)
        ex["next_sentence_labels"] = [nsp[i] if i < 15 else 1 - nsp[i]]
    data = str(tmp_path / "heldout.tfrecord.gz")
    _write_with_tensorflow(data, examples)

    metrics = core.evaluate_model(model_dir, output_dir=str(tmp_path / "out"), eval_data=[data],
                                  batch_size=8)["metrics"]
    assert metrics["eval_examples"] == 20
    assert metrics["masked_tokens"] == right + wrong
    assert metrics["masked_lm_accuracy"] == pytest.approx(right / (right + wrong))
    assert metrics["next_sentence_accuracy"] == pytest.approx(15 / 20)
    assert metrics["masked_lm_loss"] > 0 and metrics["masked_lm_perplexity"] == pytest.approx(
        np.exp(metrics["masked_lm_loss"]))

    limited = core.evaluate_model(model_dir, output_dir=str(tmp_path / "out2"), eval_data=[data], batch_size=8,
                                  max_eval_batches=2)["metrics"]
    assert limited["eval_examples"] == 16


def test_batches_split_at_shape_changes_and_need_a_positive_size(tmp_path):
    short, long_ = str(tmp_path / "a.tfrecord.gz"), str(tmp_path / "b.tfrecord.gz")
    _write_with_tensorflow(short, _examples(100, 5))
    examples = _examples(100, 3)
    for ex in examples:
        ex["input_word_ids"] += [0] * 8
    _write_with_tensorflow(long_, examples)
    sizes = [len(b) for b in core._batches([short, long_], 2, None)]
    assert sizes == [2, 2, 1, 2, 1]
    assert [len(b) for b in core._batches([short, long_], 2, 2)] == [2, 2]
    with pytest.raises(BadInput, match="batch_size=0"):
        list(core._batches([short], 0, None))


def test_fill_mask_report_for_people_and_machines(model_dir, tmp_path):
    out = tmp_path / "out"
    metrics = core.evaluate_model(model_dir, output_dir=str(out), top_k=3)
    answers = json.loads((out / "fill_mask.json").read_text(encoding="utf-8"))
    assert [a["sentence"] for a in answers] == list(core.DEFAULT_SENTENCES)
    for item in answers:
        scores = [p["score"] for p in item["predictions"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001
        assert all("[MASK]" not in p["filled"] and p["token"] in p["filled"] for p in item["predictions"])
    report = (out / "report.md").read_text(encoding="utf-8")
    assert all(s in report for s in core.DEFAULT_SENTENCES) and "| rank | token | score |" in report
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8"))["fill_mask"] == metrics["fill_mask"]
    assert metrics["metrics"] == {}  # no held-out data given
    assert metrics["files"] == ["metrics.json", "report.md", "fill_mask.json"] and metrics["markdown"] == report


def test_cli_sentences_file_overrides_and_bad_lines_are_named(model_dir, tmp_path):
    sentences = tmp_path / "s.txt"
    sentences.write_text("猫が[MASK]に座った。\n\n犬は[MASK]が好きだ。\n", encoding="utf-8")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipelines.cli", "evaluate", model_dir, "--sentences", str(sentences),
           "--output-dir", str(out), "--top-k", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    answers = json.loads((out / "fill_mask.json").read_text(encoding="utf-8"))
    assert [a["sentence"] for a in answers] == ["猫が[MASK]に座った。", "犬は[MASK]が好きだ。"]
    assert "犬は[MASK]が好きだ。" in proc.stdout

    sentences.write_text("猫が[MASK]に座った。\nマスクのない文。\n", encoding="utf-8")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and f"{sentences}:2: needs exactly one [MASK]" in proc.stderr


def test_eval_data_from_another_tokenizer_is_bad_input(model_dir, tmp_path):
    data = str(tmp_path / "big.tfrecord.gz")
    _write_with_tensorflow(data, _examples(5000, 2))
    with pytest.raises(BadInput, match=r"big\.tfrecord\.gz: record 1: token ids up to \d+ but the model has"):
        core.evaluate_model(model_dir, output_dir=str(tmp_path / "out"), eval_data=[data])
    assert not (tmp_path / "out").exists()


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def test_finetune_learns_an_easy_classification(model_dir, tmp_path):
    words = {"mountain": "高い山", "weather": "明日の雨", "people": "あの人"}  # characters in the vocab
    rows = [{"text": f"{words[label]}について{'いろいろと' * (n % 3)}話した。", "label": label}
            for n in range(12) for label in words]
    _write_jsonl(tmp_path / "train.jsonl", rows)
    _write_jsonl(tmp_path / "eval.jsonl", rows[::4])
    metrics = core.evaluate_model(model_dir, output_dir=str(tmp_path / "out"),
                                  finetune_train=str(tmp_path / "train.jsonl"),
                                  finetune_eval=str(tmp_path / "eval.jsonl"), finetune_epochs=10,
                                  finetune_learning_rate=3e-3, finetune_batch_size=4)
    assert metrics["finetune"]["task"] == "text_classification"
    assert metrics["finetune"]["labels"] == sorted(words)
    assert metrics["metrics"]["finetune_accuracy"] >= 0.9 and metrics["metrics"]["finetune_macro_f1"] >= 0.9
    assert "finetune_accuracy" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")


def test_finetune_sentence_pairs_and_bad_labels(model_dir, tmp_path):
    pairs = [{"sentence1": "犬が走る。", "sentence2": s, "label": lab}
             for s, lab in (("犬が動く。", "entailment"), ("猫が寝る。", "neutral"))] * 4
    _write_jsonl(tmp_path / "train.jsonl", pairs)
    _write_jsonl(tmp_path / "eval.jsonl", pairs[:2])
    metrics = core.evaluate_model(model_dir, output_dir=str(tmp_path / "out"),
                                  finetune_train=str(tmp_path / "train.jsonl"),
                                  finetune_eval=str(tmp_path / "eval.jsonl"), finetune_epochs=1)
    assert metrics["finetune"]["task"] == "sentence_pair_classification"
    assert metrics["metrics"]["finetune_eval_examples"] == 2

    _write_jsonl(tmp_path / "eval.jsonl", [{**pairs[0], "label": "contradiction"}])
    with pytest.raises(BadInput, match=r"eval\.jsonl: labels \['contradiction'\] do not occur in .*train\.jsonl"):
        core.evaluate_model(model_dir, output_dir=str(tmp_path / "out"), finetune_train=str(tmp_path / "train.jsonl"),
                            finetune_eval=str(tmp_path / "eval.jsonl"))
    (tmp_path / "eval.jsonl").write_text('{"sentence1": "a", "sentence2": "b", "label": 1}\n{oops\n')
    with pytest.raises(BadInput, match=r"eval\.jsonl:2: not valid JSON"):
        core.evaluate_model(model_dir, output_dir=str(tmp_path / "out"), finetune_train=str(tmp_path / "train.jsonl"),
                            finetune_eval=str(tmp_path / "eval.jsonl"))


def test_macro_f1_averages_per_label_scores():
    # label 0: tp=1 fp=1 fn=0 -> 2/3; label 1: tp=1 fp=0 fn=1 -> 2/3; label 2: tp=1 -> 1
    assert macro_f1([0, 1, 1, 2], [0, 0, 1, 2], 3) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


def test_model_and_data_on_gcs(model_dir, tmp_path, gcs):
    remote_model = storage.join(gcs, "eval/model")
    storage.copy_tree(model_dir, remote_model)
    local_data = str(tmp_path / "d.tfrecord.gz")
    vocab = len(tokenizer_files.read_tokens(os.path.join(model_dir, "vocab.txt")))
    _write_with_tensorflow(local_data, _examples(vocab, 4))
    remote_data = storage.join(gcs, "eval/d.tfrecord.gz")
    storage.copy(local_data, remote_data)
    out = storage.join(gcs, "eval/out")
    metrics = core.evaluate_model(remote_model, output_dir=out, eval_data=[remote_data], top_k=2)
    assert metrics["metrics"]["eval_examples"] == 4
    assert json.loads(storage.read_text(storage.join(out, "metrics.json")))["metrics"]["eval_examples"] == 4
    assert gzip.decompress(storage.read_bytes(remote_data))  # stored compressed, read as records

"""``bertja train``: a tiny BERT trained for a handful of steps with the real Model Garden trainer.

Data are Model Garden v2 TFRecords written with TensorFlow's tf.train.Example (components/train/
synthetic.py); the tokenizer dir is written by components/tokenizer/files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from components import storage
from components.errors import BadInput
from components.train import configs, status, synthetic, trainer

VOCAB_SIZE = 120
WORD_EMBEDDINGS = "masked_lm/embedding_table/.ATTRIBUTES/VARIABLE_VALUE"


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tokenizer dir and stage 1/2 data shared by the tests in this file."""
    root = tmp_path_factory.mktemp("train")
    synthetic.write_tokenizer_dir(str(root / "tok"), vocab_size=VOCAB_SIZE, subword_tokenizer_type="character")
    (root / "stage1").mkdir()
    (root / "stage2").mkdir()
    for i in range(2):
        synthetic.write_records(str(root / "stage1" / f"data_{i}.tfrecord.gz"), count=32,
                                  seq_length=128, max_predictions=19, vocab_size=VOCAB_SIZE, seed=i)
    synthetic.write_records(str(root / "stage2" / "data_0.tfrecord.gz"), count=8, seq_length=512,
                              max_predictions=76, vocab_size=VOCAB_SIZE, seed=7)
    return root


@pytest.fixture(scope="module")
def stage1(work):
    """A tiny stage 1 model trained for 4 steps through the ``bertja train`` command."""
    model_dir = work / "model_stage1"
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "train", "--config", "tiny", "--stage", "1",
         "--data", str(work / "stage1" / "*.tfrecord.gz"), "--model-dir", str(model_dir),
         "--tokenizer-dir", str(work / "tok"), "--train-steps", "4"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return model_dir, json.loads(proc.stdout), proc.stderr


def _variable(checkpoint: str, name: str = WORD_EMBEDDINGS) -> np.ndarray:
    import tensorflow as tf

    return tf.train.load_checkpoint(checkpoint).get_tensor(name)


def test_cli_trains_stage1_and_leaves_checkpoint_status_and_description(stage1):
    model_dir, result, stderr = stage1
    assert result["step"] == 4 and result["stage"] == 1 and result["config"] == "tiny"
    assert result["resumed_from"] is None
    assert np.isfinite(result["loss"]) and result["loss"] > 0
    assert 0.0 <= result["masked_lm_accuracy"] <= 1.0
    assert result["steps_per_sec"] > 0 and result["examples_per_sec"] == pytest.approx(result["steps_per_sec"] * 16)
    assert result["checkpoint"] == str(model_dir / "ckpt-4")
    assert trainer.latest_checkpoint(str(model_dir)) == result["checkpoint"]
    assert "stage 1: step 4/4 loss" in stderr  # progress line

    state = status.read(str(model_dir))
    assert state["failed"] is None
    assert state["complete"]["step"] == 4 and state["complete"]["checkpoint"] == result["checkpoint"]
    assert state["heartbeat"]["step"] == 4 and state["heartbeat"]["train_steps"] == 4

    description = json.loads((model_dir / configs.MODEL_DESCRIPTION).read_text())
    assert description["vocab_size"] == VOCAB_SIZE
    assert (description["hidden_size"], description["num_hidden_layers"], description["num_attention_heads"]) == (64, 2, 2)
    assert description["hidden_act"] == "gelu_new"
    assert description["tokenizer"]["subword_tokenizer_type"] == "character"
    # The embedding table in the checkpoint has the shape the description promises.
    assert _variable(result["checkpoint"]).shape == (VOCAB_SIZE, 64)
    assert "seq_length: 128" in (model_dir / "params.yaml").read_text()


def test_stage2_starts_from_stage1_weights(work, stage1):
    model_dir, stage1_result, _ = stage1
    result = trainer.train(config="tiny", stage=2, data=str(work / "stage2" / "*.gz"),
                           model_dir=str(work / "model_stage2"), tokenizer_dir=str(work / "tok"),
                           init_checkpoint=str(model_dir), train_steps=1)
    assert result["init_checkpoint"] == stage1_result["checkpoint"]
    before = _variable(stage1_result["checkpoint"])
    after = _variable(result["checkpoint"])
    # One optimizer step moves weights by about the learning rate; a fresh init differs by ~0.02.
    assert np.abs(after - before).max() < 2e-3
    assert np.abs(before).mean() > 5e-3


def test_a_restart_resumes_from_the_latest_checkpoint(work, stage1, caplog):
    model_dir = work / "model_resume"
    shutil.copytree(stage1[0], model_dir)
    with caplog.at_level(logging.INFO, logger="bertja.train"):
        result = trainer.train(config="tiny", stage=1, data=str(work / "stage1" / "*.gz"), model_dir=str(model_dir),
                               tokenizer_dir=str(work / "tok"), train_steps=6,
                               init_checkpoint=str(work / "does-not-matter-on-resume"),
                               overrides=["trainer.steps_per_loop=1", "trainer.summary_interval=1"])
    progress = [r.getMessage() for r in caplog.records if "steps/s" in r.getMessage()]
    assert progress[0].startswith("stage 1: step 5/6"), progress  # continued at step 4, not from 0
    assert [step for step, _loss in result["history"]] == [5, 6]
    assert result["resumed_from"] == str(model_dir / "ckpt-4") and result["step"] == 6
    assert trainer.latest_checkpoint(str(model_dir)) == str(model_dir / "ckpt-6")
    assert status.read(str(model_dir))["complete"]["step"] == 6


def test_latest_checkpoint_reads_a_non_ascii_absolute_path_as_tensorflow_writes_it(stage1, tmp_path):
    import tensorflow as tf

    model_dir = tmp_path / "日本語モデル"
    model_dir.mkdir()
    for f in stage1[0].glob("ckpt-4.*"):
        shutil.copy(f, model_dir / f.name)
    prefix = str(model_dir / "ckpt-4")
    tf.compat.v1.train.update_checkpoint_state(str(model_dir), model_checkpoint_path=prefix)
    assert trainer.latest_checkpoint(str(model_dir)) == prefix


def test_rerunning_a_finished_stage_trains_nothing_and_reports_complete(work, stage1):
    model_dir = work / "model_rerun"
    shutil.copytree(stage1[0], model_dir)
    shutil.rmtree(model_dir / "status")
    result = trainer.train(config="tiny", stage=1, data=str(work / "stage1" / "*.gz"), model_dir=str(model_dir),
                           tokenizer_dir=str(work / "tok"), train_steps=4)
    assert result["step"] == 4 and result["resumed_from"] == str(model_dir / "ckpt-4")
    assert result["loss"] is None  # no loop ran
    state = status.read(str(model_dir))
    assert state["heartbeat"]["step"] == 4 and state["heartbeat"]["loss"] is None  # the trainer came up
    assert state["complete"]["step"] == 4 and state["failed"] is None


@pytest.mark.parametrize("change,message", [
    (dict(config="huge"), "--config 'huge'"),
    (dict(data="{work}/nothing/*.gz"), "matches no file"),
    (dict(tokenizer_dir="{work}/stage1"), "no vocab.txt"),
    (dict(stage=2), "input_word_ids has length 128 but this stage's seq_length is 512"),
    (dict(override=["trainer.no_such_key=1"]), "--override 'trainer.no_such_key=1'"),
    (dict(override=["task.train_data.max_predictions_per_seq=20"]), "max_predictions_per_seq is 20"),
    (dict(init_checkpoint="{work}/stage2"), "--init-checkpoint"),
])
def test_bad_input_fails_before_training_and_leaves_failed_json(work, change, message):
    args = dict(config="tiny", stage=1, data="{work}/stage1/*.gz", tokenizer_dir="{work}/tok", override=[])
    args.update(change)
    args = {k: v.format(work=work) if isinstance(v, str) else v for k, v in args.items()}
    model_dir = work / f"model_bad_{abs(hash(message))}"
    with pytest.raises(BadInput, match=message.replace("(", r"\(").replace("?", r"\?")):
        trainer.train(model_dir=str(model_dir), train_steps=2, overrides=args.pop("override"), **args)
    assert trainer.latest_checkpoint(str(model_dir)) is None  # no training step ran
    failed = status.read(str(model_dir))["failed"]
    assert failed and "BadInput" in failed["error"] and "BadInput" in failed["log_tail"]


def test_data_from_another_tokenizer_is_bad_input(work, tmp_path):
    path = synthetic.write_records(str(tmp_path / "big.tfrecord.gz"), count=2, seq_length=128, max_predictions=19,
                                     vocab_size=32768)
    with pytest.raises(BadInput, match="outside the tokenizer's vocabulary of 120"):
        trainer.check_data(path, seq_length=128, max_predictions_per_seq=19, vocab_size=VOCAB_SIZE)


def test_cli_reports_bad_input_without_traceback(work, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "train", "--config", "tiny", "--stage", "1",
         "--data", str(work / "stage1" / "*.gz"), "--model-dir", str(tmp_path / "m"),
         "--tokenizer-dir", str(tmp_path / "no-tokenizer")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "bertja train: error: --tokenizer-dir" in proc.stderr and "Traceback" not in proc.stderr


def test_checks_and_checkpoint_lookup_work_on_gcs(work, stage1, gcs):
    """What the trainer reads through storage (data check, checkpoint state) also reads gs://."""
    data = f"{gcs}/train-data/stage1.tfrecord.gz"
    storage.copy(str(work / "stage1" / "data_0.tfrecord.gz"), data)
    lengths = trainer.check_data(data, seq_length=128, max_predictions_per_seq=19, vocab_size=VOCAB_SIZE)
    assert lengths["input_word_ids"] == 128 and lengths["masked_lm_ids"] == 19
    with pytest.raises(BadInput, match="seq_length is 512"):
        trainer.check_data(data, seq_length=512, max_predictions_per_seq=76, vocab_size=VOCAB_SIZE)

    model_dir = f"{gcs}/models/stage1"
    assert trainer.latest_checkpoint(model_dir) is None
    storage.copy_tree(str(stage1[0]), model_dir)
    assert trainer.latest_checkpoint(model_dir) == f"{model_dir}/ckpt-4"
    assert trainer.checkpoint_step(trainer.latest_checkpoint(model_dir)) == 4


def test_trains_on_the_output_of_the_tokenizer_and_pretraining_data_steps(tmp_path):
    """Real Japanese text -> `bertja tokenizer` core -> `bertja pretraining-data` core -> trainer."""
    from components.pretraining_data.create import create_pretraining_data
    from components.tokenizer.wordpiece import train_wordpiece

    lines = open(os.path.join(os.path.dirname(__file__), "data", "ja_sentences.txt"), encoding="utf-8").readlines()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(lines[:1500]), encoding="utf-8")
    tok = str(tmp_path / "tok")
    train_wordpiece(str(corpus), tok, vocab_size=4000, limit_alphabet=None, workers=1)
    summary = create_pretraining_data(str(corpus), str(tmp_path / "cc100.tfrecord.gz"), tok, max_seq_length=128,
                                      max_predictions=19, dupe_factor=1, num_output_files=2)
    parts = sorted(str(p) for p in tmp_path.glob("cc100*.tfrecord.gz"))
    assert len(parts) == 2 and summary

    result = trainer.train(config="tiny", stage=1, data=",".join(parts), model_dir=str(tmp_path / "model"),
                           tokenizer_dir=tok, train_steps=3)
    assert result["step"] == 3 and np.isfinite(result["loss"])
    description = json.loads((tmp_path / "model" / configs.MODEL_DESCRIPTION).read_text())
    assert description["vocab_size"] == len(open(os.path.join(tok, "vocab.txt"), encoding="utf-8").readlines())
    assert description["tokenizer"]["subword_tokenizer_type"] == "wordpiece"
    with pytest.raises(BadInput, match="seq_length is 512"):
        trainer.train(config="tiny", stage=2, data=parts[0], model_dir=str(tmp_path / "model2"), tokenizer_dir=tok)


@pytest.mark.parametrize("content,message", [
    (b"", "holds no TFRecord"),
    (b"\x1f\x8b\x08\x00garbage-not-deflate-data", "corrupt or truncated compressed data"),
    (b"sentence one\nsentence two\n" * 10, "not a TFRecord file"),
])
def test_data_that_is_not_tfrecords_is_bad_input(tmp_path, content, message):
    path = tmp_path / "shard.tfrecord.gz"
    path.write_bytes(content)
    with pytest.raises(BadInput, match=message):
        trainer.check_data(str(path), seq_length=128, max_predictions_per_seq=19, vocab_size=VOCAB_SIZE)


def test_a_tpu_run_gets_the_strategy_gcs_paths_and_overrides():
    params = trainer.experiment_params(
        config="base", stage=2, vocab_size=32768, files=["gs://bucket/wiki/data-0.tfrecord.gz"],
        init_checkpoint="gs://bucket/model/stage1/ckpt-1000000", strategy="tpu", tpu="local",
        overrides=["runtime.mixed_precision_dtype=bfloat16", "task.model.encoder.bert.num_layers=6"])
    assert (params.runtime.distribution_strategy, params.runtime.tpu, params.runtime.enable_xla) == ("tpu", "local", True)
    assert params.runtime.mixed_precision_dtype == "bfloat16"
    assert params.task.train_data.input_path == "gs://bucket/wiki/data-0.tfrecord.gz"
    assert params.task.init_checkpoint == "gs://bucket/model/stage1/ckpt-1000000"
    assert (params.task.train_data.seq_length, params.task.train_data.global_batch_size) == (512, 512)
    # What the converter reads follows the run's final settings, overrides included.
    description = configs.model_description("base", vocab_size=32768, tokenizer={}, stage_number=2,
                                            encoder=params.task.model.encoder.bert.as_dict(),
                                            train_data=params.task.train_data.as_dict())
    assert (description["num_hidden_layers"], description["hidden_size"], description["seq_length"]) == (6, 768, 512)


def test_the_train_step_trains_in_a_content_named_dir_and_a_second_run_resumes_there(work, tmp_path):
    """The pipeline's train step on CPU: two executions (new output dirs) share one training dir."""
    from components.train.stages import train_variant

    def shards(stage):
        return [{"shard": p.name, "files": {"data.tfrecord.gz": str(p)}} for p in sorted((work / stage).glob("*.gz"))]

    args = dict(variant="character", model_size="tiny", backend="cpu", training_root=str(tmp_path / "training"),
                stage1_shards=shards("stage1"), stage2_shards=shards("stage2"), tokenizer_dir=str(work / "tok"),
                shapes=((128, 19), (512, 76)), train_steps=(2, 1))
    first = train_variant(**args, fallback_root=str(tmp_path / "run-1" / "model"))
    assert first["training_dir"].startswith(str(tmp_path / "training" / "tiny-character-"))
    assert [(s["step"], s["resumed_from"]) for s in first["stages"]] == [(2, None), (1, None)]
    second = train_variant(**args, fallback_root=str(tmp_path / "run-2" / "model"))
    assert second["training_dir"] == first["training_dir"] and second["model_dir"] == first["model_dir"]
    assert [s["resumed_from"] for s in second["stages"]] == [s["checkpoint"] for s in first["stages"]]
    assert all(s["loss"] is None for s in second["stages"])  # nothing left to train
    assert not (tmp_path / "run-1").exists() and not (tmp_path / "run-2").exists()

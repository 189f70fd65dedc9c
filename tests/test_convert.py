"""Conversion: a tiny BERT trained here with TF Model Garden -> Hugging Face directory.

The checkpoint comes from the project's trainer (Model Garden's ``bert/pretraining``
experiment, ``tiny`` config, a few CPU steps); parity is checked against Model
Garden's ``BertPretrainerV2`` built from the trainer's ``params.yaml`` and restored
from the same checkpoint.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from components import storage
from components.convert import tensorbundle
from components.convert.convert import convert_checkpoint
from components.errors import BadInput
from components.tokenizer import files as tokenizer_files
from components.train import configs as train_configs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENTENCES = os.path.join(REPO, "tests", "data", "ja_sentences.txt")
VOCAB_CHARS = 300
TRAIN_STEPS = 4


def _char_tokens(n_chars: int) -> list[str]:
    """A character vocabulary: reserved tokens, then the most frequent characters of the test text."""
    from collections import Counter

    with open(SENTENCES, encoding="utf-8") as f:
        counts = Counter(c for line in f for c in line if not c.isspace())
    return tokenizer_files.reserved_tokens() + [c for c, _n in counts.most_common(n_chars)]


def _write_tfrecords(path: str, vocab: dict[str, int], seq_length: int, max_predictions: int, count: int) -> None:
    """Model Garden v2 features from consecutive real sentences (character ids)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    with open(SENTENCES, encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()][:count + 1]

    def ids(text):
        return [vocab.get(c, tokenizer_files.UNK_ID) for c in text]

    def int_feature(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))

    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for i in range(count):
            half = (seq_length - 3) // 2
            a, b = ids(lines[i])[:half], ids(lines[i + 1])[:half]
            tokens = [tokenizer_files.CLS_ID, *a, tokenizer_files.SEP_ID, *b, tokenizer_files.SEP_ID]
            n = len(tokens)
            positions = sorted(rng.choice(np.arange(1, n - 1), size=min(max_predictions, max(1, n // 7)),
                                          replace=False))
            labels = [tokens[p] for p in positions]
            for p in positions:
                tokens[p] = tokenizer_files.MASK_ID
            pad = seq_length - n
            k = len(positions)
            example = tf.train.Example(features=tf.train.Features(feature={
                "input_word_ids": int_feature(tokens + [0] * pad),
                "input_mask": int_feature([1] * n + [0] * pad),
                "input_type_ids": int_feature([0] * (len(a) + 2) + [1] * (len(b) + 1) + [0] * pad),
                "masked_lm_positions": int_feature(list(positions) + [0] * (max_predictions - k)),
                "masked_lm_ids": int_feature(labels + [0] * (max_predictions - k)),
                "masked_lm_weights": tf.train.Feature(float_list=tf.train.FloatList(
                    value=[1.0] * k + [0.0] * (max_predictions - k))),
                "next_sentence_labels": int_feature([0]),
            }))
            writer.write(example.SerializeToString())


def _model_garden_model(model_dir: str, prefix: str):
    """Model Garden's BertPretrainerV2 built from the trainer's own params.yaml and restored from the
    checkpoint the way its trainer saved it."""
    import tensorflow as tf
    import yaml
    from official.common import registry_imports  # noqa: F401  (registers bert/pretraining)
    from official.core import exp_factory, task_factory

    params = exp_factory.get_exp_config(train_configs.EXPERIMENT)
    with open(os.path.join(model_dir, "params.yaml"), encoding="utf-8") as f:
        params.override(yaml.safe_load(f), is_strict=False)
    model = task_factory.get_task(params.task).build_model()
    checkpoint = tf.train.Checkpoint(model=model, **model.checkpoint_items)
    checkpoint.read(prefix).assert_existing_objects_matched().expect_partial()
    return model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Trains the tiny config for a few steps with the project's trainer (Model Garden bert/pretraining)."""
    from components.train.trainer import train

    root = tmp_path_factory.mktemp("trained")
    tokens = _char_tokens(VOCAB_CHARS)
    tokenizer_dir = str(root / "tokenizer")
    tokenizer_files.write_tokenizer_dir(tokenizer_dir, tokens, subword_tokenizer_type="character")
    stage = train_configs.stage(1)
    data = str(root / "train.tfrecord.gz")
    _write_tfrecords(data, {t: i for i, t in enumerate(tokens)}, stage.seq_length,
                     stage.max_predictions_per_seq, count=40)
    model_dir = str(root / "model")
    half = TRAIN_STEPS // 2
    train(config="tiny", stage=1, data=data, model_dir=model_dir, tokenizer_dir=tokenizer_dir,
          train_steps=TRAIN_STEPS, overrides=[f"trainer.checkpoint_interval={half}",
                                              f"trainer.steps_per_loop={half}", f"trainer.summary_interval={half}"])
    return {"root": root, "model_dir": model_dir, "tokenizer_dir": tokenizer_dir, "vocab_size": len(tokens)}


@pytest.fixture(scope="module")
def converted(trained, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("hf") / "model")
    summary = convert_checkpoint(trained["model_dir"], out, tokenizer_dir=trained["tokenizer_dir"])
    return {"dir": out, "summary": summary}


def _padded_batch(vocab_size: int, seq_length: int):
    """Three rows of different lengths, padded: exercises the attention mask."""
    rng = np.random.default_rng(7)
    lengths = [seq_length, 37, 9]
    ids = np.zeros((3, seq_length), np.int32)
    mask = np.zeros_like(ids)
    types = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(15, vocab_size, n)
        ids[row, 0], ids[row, n - 1] = tokenizer_files.CLS_ID, tokenizer_files.SEP_ID
        mask[row, :n] = 1
        types[row, n // 2:n] = 1
    return ids, mask, types


def test_tensorbundle_reads_every_variable_as_tensorflow_does(trained):
    import tensorflow as tf

    bundle = tensorbundle.TensorBundle(trained["model_dir"])
    names = [n for n in bundle.names() if n != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    assert [n for n, _shape in tf.train.list_variables(bundle.prefix)] == bundle.names()
    arrays = bundle.read_many(names)
    assert any("OPTIMIZER_SLOT" in n for n in names) and arrays["global_step/.ATTRIBUTES/VARIABLE_VALUE"] == TRAIN_STEPS
    for name in names:
        expected = tf.train.load_variable(bundle.prefix, name)
        assert arrays[name].dtype == expected.dtype, name
        np.testing.assert_array_equal(arrays[name], expected, err_msg=name)
    graph = bundle.read("_CHECKPOINTABLE_OBJECT_GRAPH").item()
    assert graph == tf.train.load_variable(bundle.prefix, "_CHECKPOINTABLE_OBJECT_GRAPH")


def test_converted_logits_match_model_garden(trained, converted):
    import tensorflow as tf
    import torch
    from transformers import BertForPreTraining

    config = json.loads(storage.read_text(os.path.join(converted["dir"], "config.json")))
    assert config["architectures"] == ["BertForPreTraining"]
    assert config["hidden_act"] == "gelu_new"
    assert converted["summary"]["trainer_metadata"].endswith(train_configs.MODEL_DESCRIPTION)
    assert (converted["summary"]["training_config"], converted["summary"]["stage"]) == ("tiny", 1)
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (64, 2, trained["vocab_size"])

    seq_length = 48
    ids, mask, types = _padded_batch(trained["vocab_size"], seq_length)
    mg_model = _model_garden_model(trained["model_dir"], converted["summary"]["checkpoint"])
    positions = np.tile(np.arange(seq_length, dtype=np.int32), (ids.shape[0], 1))
    mg = mg_model({"input_word_ids": tf.constant(ids), "input_mask": tf.constant(mask),
                   "input_type_ids": tf.constant(types), "masked_lm_positions": tf.constant(positions)},
                  training=False)
    hf_model = BertForPreTraining.from_pretrained(converted["dir"]).eval()
    with torch.no_grad():
        hf = hf_model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                      token_type_ids=torch.tensor(types, dtype=torch.long))
    mlm_diff = np.abs(hf.prediction_logits.numpy() - mg["mlm_logits"].numpy()).max()
    nsp_diff = np.abs(hf.seq_relationship_logits.numpy() - mg["next_sentence"].numpy()).max()
    assert mlm_diff < 1e-4 and nsp_diff < 1e-4, (mlm_diff, nsp_diff)
    # The logits are not trivially equal (e.g. all zeros): the trained model discriminates.
    assert np.ptp(hf.prediction_logits.numpy()) > 0.1


def test_loads_with_auto_classes_and_answers_fill_mask(converted):
    from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

    tokenizer = AutoTokenizer.from_pretrained(converted["dir"])
    assert type(tokenizer).__name__ == "BertJapaneseTokenizer"
    model = AutoModelForMaskedLM.from_pretrained(converted["dir"])
    fill = pipeline("fill-mask", model=model, tokenizer=tokenizer, top_k=3)
    answers = fill("私は[MASK]を見た。")
    assert len(answers) == 3 and all(a["token_str"] and 0 <= a["score"] <= 1 for a in answers)
    assert sorted(converted["summary"]["tokenizer_files"]) == sorted(
        [tokenizer_files.VOCAB_FILE, tokenizer_files.TOKENIZER_CONFIG_FILE, tokenizer_files.SPECIAL_TOKENS_MAP_FILE])


def test_model_dir_takes_latest_checkpoint_and_a_prefix_picks_one(trained, converted, tmp_path):
    from safetensors.numpy import load_file

    assert converted["summary"]["checkpoint"].endswith(f"ckpt-{TRAIN_STEPS}")
    assert converted["summary"]["global_step"] == TRAIN_STEPS
    earlier = os.path.join(trained["model_dir"], f"ckpt-{TRAIN_STEPS // 2}")
    summary = convert_checkpoint(earlier, str(tmp_path / "early"), tokenizer_dir=trained["tokenizer_dir"])
    assert summary["global_step"] == TRAIN_STEPS // 2
    latest = load_file(os.path.join(converted["dir"], "model.safetensors"))
    early = load_file(str(tmp_path / "early" / "model.safetensors"))
    assert latest.keys() == early.keys()
    assert not np.array_equal(latest["bert.embeddings.word_embeddings.weight"],
                              early["bert.embeddings.word_embeddings.weight"])


def test_reads_and_writes_gcs(trained, converted, gcs):
    src = storage.join(gcs, "run/model")
    for path in storage.list_files(trained["model_dir"]):
        rel = os.path.relpath(path, trained["model_dir"])
        if rel.startswith("ckpt-") or rel in ("checkpoint", train_configs.MODEL_DESCRIPTION):
            storage.copy(path, storage.join(src, rel))
    tokenizer = storage.join(gcs, "run/tokenizer")
    storage.copy_tree(trained["tokenizer_dir"], tokenizer)
    out = storage.join(gcs, "run/hf")
    summary = convert_checkpoint(src, out, tokenizer_dir=tokenizer)
    assert summary["checkpoint"] == storage.join(src, f"ckpt-{TRAIN_STEPS}")
    assert storage.read_bytes(storage.join(out, "model.safetensors")) == \
        storage.read_bytes(os.path.join(converted["dir"], "model.safetensors"))
    assert storage.exists(storage.join(out, "vocab.txt"))


def test_vocab_size_mismatch_is_bad_input(trained, tmp_path):
    tokens = _char_tokens(VOCAB_CHARS - 10)
    tokenizer_files.write_tokenizer_dir(str(tmp_path / "tok"), tokens, subword_tokenizer_type="character")
    with pytest.raises(BadInput, match=rf"{trained['vocab_size']} tokens.*has {len(tokens)}"):
        convert_checkpoint(trained["model_dir"], str(tmp_path / "out"), tokenizer_dir=str(tmp_path / "tok"))
    assert not (tmp_path / "out").exists()


def test_a_failure_after_the_weights_leaves_no_directory(trained, tmp_path):
    tokenizer = tmp_path / "tok"
    storage.copy_tree(trained["tokenizer_dir"], str(tokenizer))
    os.unlink(tokenizer / tokenizer_files.SPECIAL_TOKENS_MAP_FILE)
    (tokenizer / tokenizer_files.SPECIAL_TOKENS_MAP_FILE).mkdir()  # exists, but cannot be copied
    with pytest.raises(BadInput, match="special_tokens_map.json: is a directory"):
        convert_checkpoint(trained["model_dir"], str(tmp_path / "out"), tokenizer_dir=str(tokenizer))
    assert not (tmp_path / "out").exists()


def test_missing_checkpoint_is_bad_input_from_the_cli(trained, tmp_path):
    missing = str(tmp_path / "nowhere" / "ckpt-7")
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "convert", missing, str(tmp_path / "out"),
                           "--tokenizer-dir", trained["tokenizer_dir"]], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert "no checkpoint here" in proc.stderr and missing in proc.stderr and "Traceback" not in proc.stderr


def _copy_checkpoint(trained, tmp_path) -> str:
    prefix = tensorbundle.TensorBundle(trained["model_dir"]).prefix
    dst = tmp_path / "ckpt"
    dst.mkdir()
    for suffix in (".index", ".data-00000-of-00001"):
        storage.copy(prefix + suffix, str(dst / (os.path.basename(prefix) + suffix)))
    return str(dst / os.path.basename(prefix))


def test_corrupt_index_and_truncated_shard_are_bad_input(trained, tmp_path):
    prefix = _copy_checkpoint(trained, tmp_path)
    index = bytearray(open(prefix + ".index", "rb").read())
    index[100] ^= 0xFF
    open(prefix + ".index", "wb").write(bytes(index))
    with pytest.raises(BadInput, match=r"\.index: .*checksum mismatch"):
        convert_checkpoint(prefix, str(tmp_path / "out"), tokenizer_dir=trained["tokenizer_dir"])

    (tmp_path / "b").mkdir()
    prefix = _copy_checkpoint(trained, tmp_path / "b")
    data = prefix + ".data-00000-of-00001"
    open(data, "r+b").truncate(1000)  # cuts into the first layers
    with pytest.raises(BadInput, match=r"data-00000-of-00001.*(truncated|checksum)"):
        convert_checkpoint(prefix, str(tmp_path / "out"), tokenizer_dir=trained["tokenizer_dir"])
    assert not (tmp_path / "out").exists()


def test_description_of_another_model_is_bad_input(trained, tmp_path):
    prefix = _copy_checkpoint(trained, tmp_path)
    description = train_configs.model_description("base", vocab_size=trained["vocab_size"], stage_number=1,
                                                  tokenizer={})
    storage.write_text(str(tmp_path / "ckpt" / train_configs.MODEL_DESCRIPTION), json.dumps(description))
    with pytest.raises(BadInput, match=r"bertja_model.json: says hidden_size=768 but the checkpoint has 64"):
        convert_checkpoint(prefix, str(tmp_path / "out"), tokenizer_dir=trained["tokenizer_dir"])


def test_not_a_checkpoint_index_is_bad_input(tmp_path):
    (tmp_path / "x.index").write_bytes(b"\0" * 100)
    with pytest.raises(BadInput, match=r"x\.index: not a TensorFlow checkpoint index"):
        tensorbundle.TensorBundle(str(tmp_path / "x"))


def test_snappy_blocks_decode_literals_and_overlapping_copies():
    # "abcd" as a literal, then a 1-byte-offset copy of length 8 at distance 4 ("abcdabcd"),
    # then a 2-byte-offset copy of length 3 at distance 2 (overlapping: "cdc").
    stream = bytes([15]) + bytes([(4 - 1) << 2]) + b"abcd" + bytes([1 | ((8 - 4) << 2), 4]) \
        + bytes([2 | ((3 - 1) << 2)]) + struct.pack("<H", 2)
    assert tensorbundle.snappy_decompress(stream) == b"abcdabcdabcdcdc"
    with pytest.raises(ValueError):
        tensorbundle.snappy_decompress(bytes([5, 1 | (0 << 2), 9]))  # copy before any output


def test_truncated_fixed_width_protobuf_fields_are_value_errors():
    assert tensorbundle.proto_fields(b"\x0d\x01\x00\x00\x00\x11" + bytes(8)) == [(1, 1), (2, 0)]
    for data in (b"\x09\x01\x02", b"\x0d\x01"):  # fixed64 / fixed32 cut short
        with pytest.raises(ValueError, match="truncated"):
            tensorbundle.proto_fields(data)


def _snappy_literals(data: bytes) -> bytes:
    """A valid snappy stream made of literal chunks only (what a test can write without a codec)."""
    out = bytearray()
    n = len(data)
    while True:  # varint preamble: uncompressed length
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            break
    for start in range(0, len(data), 65536):
        chunk = data[start:start + 65536]
        out += bytes([61 << 2]) + struct.pack("<H", len(chunk) - 1) + chunk
    return bytes(out)


def _masked_crc(data: bytes) -> int:
    import google_crc32c

    crc = google_crc32c.value(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _block(items) -> bytes:
    body = b"".join(_varint(0) + _varint(len(k)) + _varint(len(v)) + k + v for k, v in items)
    return body + struct.pack("<II", 0, 1)  # one restart point at 0


def test_snappy_compressed_index_reads_like_the_original(trained, tmp_path):
    """An index whose data block is snappy-compressed (TF writes uncompressed ones) reads the same."""
    prefix = _copy_checkpoint(trained, tmp_path)
    original = tensorbundle.TensorBundle(prefix)
    items = tensorbundle.sstable_items(open(prefix + ".index", "rb").read(), "original")
    data_block = _snappy_literals(_block(items))
    table = data_block + bytes([tensorbundle.SNAPPY_COMPRESSION]) + struct.pack(
        "<I", _masked_crc(data_block + bytes([tensorbundle.SNAPPY_COMPRESSION])))
    meta_offset = len(table)
    meta = _block([])
    table += meta + b"\0" + struct.pack("<I", _masked_crc(meta + b"\0"))
    index_offset = len(table)
    index = _block([(items[-1][0], _varint(0) + _varint(len(data_block)))])
    table += index + b"\0" + struct.pack("<I", _masked_crc(index + b"\0"))
    handles = _varint(meta_offset) + _varint(len(meta)) + _varint(index_offset) + _varint(len(index))
    table += handles.ljust(40, b"\0") + struct.pack("<Q", tensorbundle.TABLE_MAGIC)
    open(prefix + ".index", "wb").write(table)

    rewritten = tensorbundle.TensorBundle(prefix)
    assert rewritten.entries == original.entries
    name = "masked_lm/embedding_table/.ATTRIBUTES/VARIABLE_VALUE"
    np.testing.assert_array_equal(rewritten.read(name), original.read(name))


def test_state_file_written_by_tensorflow_with_a_non_ascii_absolute_path(trained, tmp_path):
    import tensorflow as tf

    model_dir = tmp_path / "日本語モデル"
    model_dir.mkdir()
    prefix = _copy_checkpoint(trained, model_dir)  # .../日本語モデル/ckpt/ckpt-N
    tf.compat.v1.train.update_checkpoint_state(str(model_dir), model_checkpoint_path=prefix)
    assert tensorbundle.TensorBundle(str(model_dir)).prefix == prefix


def test_sharded_and_sliced_checkpoints_read_as_tensorflow_does(tmp_path):
    """Multi-shard data files (multi-host TPU saves) and variables split into slices by a sharding policy."""
    import tensorflow as tf

    rng = np.random.default_rng(3)
    variables = {f"w{i}": tf.Variable(rng.normal(size=(70, 40)).astype(np.float32)) for i in range(4)}
    variables["steps"] = tf.Variable(np.arange(7, dtype=np.int64))
    variables["half"] = tf.Variable(rng.normal(size=5).astype(np.float16))
    variables["bf16"] = tf.Variable(tf.constant([1.5, -2.25, 3.0], tf.bfloat16))
    policy = tf.train.experimental.MaxShardSizePolicy(max_shard_size=9000)
    prefix = tf.train.Checkpoint(**variables).write(
        str(tmp_path / "ckpt"), options=tf.train.CheckpointOptions(experimental_sharding_callback=policy))

    bundle = tensorbundle.TensorBundle(prefix)
    assert bundle.num_shards > 1 and any(e.slices for e in bundle.entries.values())
    names = [n for n in bundle.names() if n != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    arrays = bundle.read_many(names)
    for name in names:
        expected = tf.train.load_variable(prefix, name)
        if name.startswith("bf16/"):
            expected = expected.astype(np.float32)  # bfloat16 is widened to float32
        assert arrays[name].dtype == expected.dtype, name
        np.testing.assert_array_equal(arrays[name], expected, err_msg=name)

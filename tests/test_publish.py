"""Publishing: a converted model goes to a release location (local or gs://) with a model card,
all or nothing."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys

import pytest

from components import storage
from components.errors import BadInput
from components.publish.core import MANIFEST, MODEL_CARD, publish_model
from components.tokenizer import files as tokenizer_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = {"wikipedia": {"dump_date": "20240801"}, "cc-100": {"url": "https://data.statmt.org/cc-100/ja.txt.xz"}}
# As bertja evaluate writes metrics.json (numbers nested under "metrics").
METRICS = {"metrics": {"masked_lm_accuracy": 0.4321, "masked_lm_loss": 3.25, "next_sentence_accuracy": 0.9},
           "eval_data": ["/data/heldout-00000.tfrecord.gz"],
           "fill_mask": [{"sentence": "猫が[MASK]で寝ている。",
                          "predictions": [{"token": "家", "score": 0.5, "filled": "猫が家で寝ている。"}]}]}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A converted-model directory as bertja convert leaves it (small random weights)."""
    import torch
    from transformers import BertConfig, BertForPreTraining

    root = str(tmp_path_factory.mktemp("converted"))
    tokens = tokenizer_files.reserved_tokens() + list("猫犬家がでにをはの。寝ているた")
    tokenizer_files.write_tokenizer_dir(root, tokens, subword_tokenizer_type="character")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokens), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, hidden_act="gelu_new",
                        architectures=["BertForPreTraining"], tokenizer_class="BertJapaneseTokenizer")
    BertForPreTraining(config).save_pretrained(root)
    storage.write_text(os.path.join(root, "bertja_conversion.json"),
                       json.dumps({"global_step": 1234, "training_config": "tiny"}))
    return root


def _files(root: str) -> dict[str, bytes]:
    return {os.path.relpath(p, root): open(p, "rb").read() for p in storage.list_files(root)}


def test_local_release_has_model_card_manifest_and_loads(model_dir, tmp_path):
    release = str(tmp_path / "releases" / "v1")
    flat_sources = {"wikipedia_dump_date": "20240801", "cc100_url": "https://data.statmt.org/cc-100/ja.txt.xz"}
    summary = publish_model(model_dir, release, metrics=METRICS["metrics"], sources=flat_sources)
    released = _files(release)
    card = released[MODEL_CARD].decode("utf-8")
    assert "- **wikipedia** (dump_date: `20240801`)" in card and "- **cc-100** (url: `https://data" in card
    assert "| masked_lm_accuracy | 0.4321 |" in card
    for name, data in _files(model_dir).items():
        assert released[name] == data, name
    manifest = json.loads(released[MANIFEST])
    assert set(manifest["files"]) == set(released) - {MANIFEST}
    for name, entry in manifest["files"].items():
        assert entry == {"size": len(released[name]), "sha256": hashlib.sha256(released[name]).hexdigest()}
    assert summary["model_name"] == "bert-tiny-japanese-char" and summary["num_parameters"] > 0
    assert sorted(os.listdir(tmp_path / "releases")) == ["v1"]  # no staging left behind
    assert all(stat.S_IMODE(os.stat(os.path.join(release, n)).st_mode) == 0o644 for n in released)

    from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

    tokenizer = AutoTokenizer.from_pretrained(release)
    assert type(tokenizer).__name__ == "BertJapaneseTokenizer"
    fill = pipeline("fill-mask", model=AutoModelForMaskedLM.from_pretrained(release), tokenizer=tokenizer, top_k=2)
    assert len(fill("猫が[MASK]で寝ている。")) == 2


def test_model_card_says_what_a_user_needs(model_dir, tmp_path):
    metrics_file = tmp_path / "metrics.json"
    metrics_file.write_text(json.dumps(METRICS, ensure_ascii=False), encoding="utf-8")
    publish_model(model_dir, str(tmp_path / "rel"), metrics=str(metrics_file), sources=SOURCES,
                  model_name="bert-tiny-japanese-char-test", variant="tiny, character")
    card = (tmp_path / "rel" / MODEL_CARD).read_text(encoding="utf-8")
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "language: ja" in front and "license: apache-2.0" in front and "- wikipedia" in front and "- cc100" in front
    assert "# bert-tiny-japanese-char-test" in body and "tiny, character" in body
    assert "| layers | 2 |" in body and "| hidden size | 16 |" in body and "| training steps (last stage) | 1,234 |" in body
    assert "`20240801`" in body and "CC BY-SA" in body and "Common Crawl" in body
    assert "| masked_lm_accuracy | 0.4321 |" in body and "heldout-00000.tfrecord.gz" in body
    assert "猫が[MASK]で寝ている。 → 家 (0.500)" in body
    assert "pip install transformers torch fugashi unidic-lite" in body and "BertJapaneseTokenizer" in body
    assert 'AutoTokenizer.from_pretrained(name)' in body


def test_existing_release_needs_overwrite_and_failures_leave_it_untouched(model_dir, tmp_path):
    release = str(tmp_path / "rel")
    publish_model(model_dir, release, metrics=METRICS)
    before = _files(release)
    with pytest.raises(BadInput, match="already holds a release"):
        publish_model(model_dir, release)

    broken = tmp_path / "broken"
    storage.copy_tree(model_dir, str(broken))
    os.symlink(str(tmp_path / "gone"), broken / "zz_extra.bin")  # a file that cannot be read
    with pytest.raises(BadInput, match="zz_extra.bin: no such file"):
        publish_model(str(broken), release, overwrite=True)
    assert _files(release) == before
    assert sorted(os.listdir(tmp_path)) == ["broken", "rel"]  # no staging or backup left

    os.unlink(broken / "zz_extra.bin")
    (broken / "notes.txt").write_text("new file\n")
    publish_model(str(broken), release, overwrite=True)
    after = _files(release)
    assert after["notes.txt"] == b"new file\n" and json.loads(after[MANIFEST])["files"].keys() >= {"notes.txt"}
    assert "masked_lm_accuracy" not in after[MODEL_CARD].decode()  # the new card, without metrics


def test_a_failed_final_rename_puts_the_previous_release_back(model_dir, tmp_path, monkeypatch):
    release = str(tmp_path / "rel")
    publish_model(model_dir, release, metrics=METRICS)
    before = _files(release)
    rename = os.rename

    def failing_rename(src, dst):
        if ".staging-" in str(src):
            raise OSError("disk went away")
        rename(src, dst)

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(OSError, match="disk went away"):
        publish_model(model_dir, release, overwrite=True)
    assert _files(release) == before
    assert sorted(os.listdir(tmp_path)) == ["rel"]  # no staging or backup left


def test_bad_inputs_are_named(model_dir, tmp_path):
    partial = tmp_path / "partial"
    storage.copy_tree(model_dir, str(partial))
    os.unlink(partial / "model.safetensors")
    with pytest.raises(BadInput, match=r"partial/model\.safetensors: missing"):
        publish_model(str(partial), str(tmp_path / "rel"))
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "other.txt").write_text("not a release")
    with pytest.raises(BadInput, match="not empty and holds no release"):
        publish_model(model_dir, str(tmp_path / "occupied"))

    (tmp_path / "m.json").write_text("{not json")
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "publish", model_dir, str(tmp_path / "rel"),
                           "--metrics", str(tmp_path / "m.json")], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "m.json: not valid JSON" in proc.stderr
    assert not (tmp_path / "rel").exists()


def test_gcs_release_manifest_last_and_overwrite_removes_old_files(model_dir, tmp_path, gcs):
    release = storage.join(gcs, "releases/bert-tiny")
    storage.write_text(storage.join(release, "unrelated.txt"), "kept")  # not ours: never deleted
    publish_model(model_dir, release, metrics=METRICS, sources=SOURCES)
    manifest = json.loads(storage.read_text(storage.join(release, MANIFEST)))
    for name, entry in manifest["files"].items():
        data = storage.read_bytes(storage.join(release, name))
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], name
    assert not [u for u in storage.list_files(storage.join(gcs, "releases")) if ".staging-" in u]

    with pytest.raises(BadInput, match="already holds a release"):
        publish_model(model_dir, release)
    smaller = tmp_path / "smaller"
    storage.copy_tree(model_dir, str(smaller))
    os.unlink(smaller / "bertja_conversion.json")
    publish_model(str(smaller), release, overwrite=True)
    names = {storage.basename(u) for u in storage.list_files(release)}
    assert "bertja_conversion.json" not in names and {"unrelated.txt", MANIFEST, MODEL_CARD} <= names
    assert set(json.loads(storage.read_text(storage.join(release, MANIFEST)))["files"]) == names - {
        MANIFEST, "unrelated.txt"}

"""Model Garden trains MLM-only data (no NSP head) from a SentencePiece tokenizer, and its configs say so."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import yaml

from components.errors import BadInput
from components.train import configs, trainer

CORPUS = os.path.join(os.path.dirname(__file__), "data", "ja_sentences.txt")


def test_mlm_only_experiments_have_no_classification_head_and_no_nsp_labels():
    names = [n for n in configs.all_experiments() if "_mlm_" in n]
    assert sorted(names) == sorted(f"{c}_sentencepiece_mlm_stage{s}_{configs.stage(s).corpus}.yaml"
                                   for c in configs.PROFILES for s in configs.STAGES)
    for name in names:
        doc = yaml.safe_load(configs.all_experiments()[name])
        assert doc["task"]["model"]["cls_heads"] == []  # explicit: the experiment's default has the NSP head
        assert doc["task"]["train_data"]["use_next_sentence_label"] is False
        assert doc["task"]["validation_data"]["use_next_sentence_label"] is False
    nsp = yaml.safe_load(configs.experiment_yaml("base", "sentencepiece", 1))
    assert nsp["task"]["model"]["encoder"]["bert"]["vocab_size"] == 32000
    assert nsp["task"]["model"]["cls_heads"][0]["name"] == "next_sentence"


def test_model_garden_trains_mlm_only_sentencepiece_data(tmp_path):
    """SentencePiece tokenizer -> MLM-only pretraining data -> 3 tiny steps with cls_heads: []."""
    from components.pretraining_data.create import create_pretraining_data
    from components.tokenizer.sentencepiece import train_sentencepiece

    lines = open(CORPUS, encoding="utf-8").readlines()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(lines[:1500]), encoding="utf-8")
    tok = str(tmp_path / "tok")
    train_sentencepiece([str(corpus)], tok, vocab_size=3000, character_coverage=0.995, do_lower_case=True)
    data = str(tmp_path / "mlm.tfrecord.gz")
    create_pretraining_data(str(corpus), data, tok, max_seq_length=128, max_predictions=19, dupe_factor=1,
                            next_sentence_prediction=False)

    with pytest.raises(BadInput, match="MLM-only data .*next_sentence_prediction=False"):
        trainer.train(config="tiny", stage=1, data=data, model_dir=str(tmp_path / "nsp"), tokenizer_dir=tok,
                      train_steps=1)
    model_dir = tmp_path / "model"
    result = trainer.train(config="tiny", stage=1, data=data, model_dir=str(model_dir), tokenizer_dir=tok,
                           train_steps=3, next_sentence_prediction=False)
    assert result["step"] == 3 and np.isfinite(result["loss"])
    description = json.loads((model_dir / configs.MODEL_DESCRIPTION).read_text())
    assert description["next_sentence_head"] is None and description["vocab_size"] == 3000
    assert description["tokenizer"]["type"] == "sentencepiece" and description["tokenizer"]["do_lower_case"]
    params = yaml.safe_load((model_dir / "params.yaml").read_text())
    assert params["task"]["model"]["cls_heads"] == [] and not params["task"]["train_data"]["use_next_sentence_label"]
    import tensorflow as tf

    names = [name for name, _ in tf.train.list_variables(str(model_dir))]
    assert not any("next_sentence" in n or "pooler_dense" in n for n in names), names


def test_a_sentencepiece_model_garden_model_converts_with_its_tokenizer_files(tmp_path):
    """yoheikikuta-sp's path: SentencePiece tokenizer -> NSP data -> Model Garden -> HF model whose
    AutoTokenizer is the fast SentencePiece one and whose plain fill-mask pipeline works."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

    from components.convert.convert import convert_checkpoint
    from components.pretraining_data.create import create_pretraining_data
    from components.tokenizer.sentencepiece import train_sentencepiece

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(open(CORPUS, encoding="utf-8").readlines()[:1500]), encoding="utf-8")
    tok = str(tmp_path / "tok")
    train_sentencepiece([str(corpus)], tok, vocab_size=3000, character_coverage=0.995, do_lower_case=True,
                        control_symbols=["[PAD]", "[CLS]", "[SEP]", "[MASK]"])
    data = str(tmp_path / "nsp.tfrecord.gz")
    create_pretraining_data(str(corpus), data, tok, max_seq_length=128, max_predictions=19, dupe_factor=1)
    model_dir = str(tmp_path / "model")
    trainer.train(config="tiny", stage=1, data=data, model_dir=model_dir, tokenizer_dir=tok, train_steps=2)
    out = str(tmp_path / "hf")
    summary = convert_checkpoint(model_dir, out, tokenizer_dir=tok)
    assert summary["subword_tokenizer_type"] == "sentencepiece" and "sentencepiece.model" in summary["tokenizer_files"]
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.is_fast and tokenizer.mask_token_id == 4
    assert json.load(open(os.path.join(out, "config.json")))["tokenizer_class"] == "PreTrainedTokenizerFast"
    fill = pipeline("fill-mask", model=AutoModelForMaskedLM.from_pretrained(out), tokenizer=tokenizer, top_k=3)
    answers = fill("私は[MASK]を見た。")
    assert len(answers) == 3 and all(0 <= a["score"] <= 1 for a in answers)
    with pytest.raises(BadInput, match="has 261"):
        from components.tokenizer.byte import write_byte_tokenizer

        write_byte_tokenizer(str(tmp_path / "byte"))
        convert_checkpoint(model_dir, str(tmp_path / "hf2"), tokenizer_dir=str(tmp_path / "byte"))

"""Training configs: the committed YAML files are current, and Model Garden accepts every one."""

from __future__ import annotations

import os

import pytest
import yaml

from components.errors import BadInput
from components.train import configs


def test_committed_experiment_files_are_up_to_date():
    expected = configs.all_experiments()
    committed = sorted(f for f in os.listdir(configs.EXPERIMENTS_DIR) if f.endswith(".yaml"))
    assert committed == sorted(expected), "run: python -m components.train.configs"
    for name, text in expected.items():
        with open(os.path.join(configs.EXPERIMENTS_DIR, name), encoding="utf-8") as f:
            assert f.read() == text, f"{name} is stale: run python -m components.train.configs"


@pytest.mark.parametrize("config,tok,stage,hidden,layers,heads,vocab,seq,preds,batch,lr", [
    ("base", "wordpiece", 1, 768, 12, 12, 32768, 128, 19, 2048, 1e-4),
    ("base", "character", 2, 768, 12, 12, 7027, 512, 76, 512, 1e-4),
    ("large", "wordpiece", 2, 1024, 24, 16, 32768, 512, 76, 512, 5e-5),
    ("large", "character", 1, 1024, 24, 16, 7027, 128, 19, 2048, 5e-5),
])
def test_recipe_numbers_reach_the_yaml(config, tok, stage, hidden, layers, heads, vocab, seq, preds, batch, lr):
    doc = yaml.safe_load(configs.experiment_yaml(config, tok, stage))
    bert = doc["task"]["model"]["encoder"]["bert"]
    assert (bert["hidden_size"], bert["num_layers"], bert["num_attention_heads"], bert["vocab_size"]) == \
        (hidden, layers, heads, vocab)
    assert bert["intermediate_size"] == 4 * hidden and bert["hidden_activation"] == "gelu"
    assert doc["task"]["model"]["cls_heads"] == [{"name": "next_sentence", "inner_dim": hidden, "num_classes": 2,
                                                  "activation": "tanh", "dropout_rate": 0.1, "cls_token_idx": 0}]
    data = doc["task"]["train_data"]
    assert (data["seq_length"], data["max_predictions_per_seq"], data["global_batch_size"]) == (seq, preds, batch)
    assert data["file_type"] == "tfrecord_compressed" and data["use_v2_feature_names"] is True
    trainer = doc["trainer"]
    assert (trainer["train_steps"], trainer["checkpoint_interval"], trainer["max_to_keep"]) == (1_000_000, 20_000, 5)
    opt = trainer["optimizer_config"]
    assert opt["optimizer"]["adamw"]["exclude_from_weight_decay"] == ["LayerNorm", "layer_norm", "bias"]
    assert opt["optimizer"]["adamw"]["epsilon"] == 1e-7 and opt["optimizer"]["adamw"]["gradient_clip_norm"] == 1.0
    assert opt["learning_rate"]["polynomial"]["initial_learning_rate"] == lr
    assert opt["learning_rate"]["polynomial"]["end_learning_rate"] == 0.0
    assert opt["warmup"]["polynomial"]["warmup_steps"] == 10_000


def test_every_experiment_file_is_a_valid_model_garden_override():
    from official.common import registry_imports  # noqa: F401  (registers bert/pretraining)
    from official.core import exp_factory

    for name in configs.all_experiments():
        params = exp_factory.get_exp_config(configs.EXPERIMENT)
        with open(os.path.join(configs.EXPERIMENTS_DIR, name), encoding="utf-8") as f:
            params.override(yaml.safe_load(f), is_strict=True)  # an unknown key raises
        params.validate()


def test_short_runs_get_a_short_warmup_and_decay_to_their_end():
    opt = configs.experiment_overrides("base", 1, vocab_size=32768, train_steps=50)["trainer"]["optimizer_config"]
    assert opt["warmup"]["polynomial"]["warmup_steps"] == 5
    assert opt["learning_rate"]["polynomial"]["decay_steps"] == 50


def test_unknown_config_and_stage_are_bad_input():
    with pytest.raises(BadInput, match="--config 'huge'"):
        configs.profile("huge")
    with pytest.raises(BadInput, match="--stage 3"):
        configs.stage(3)


def test_zero_train_steps_is_bad_input_not_the_profiles_default():
    with pytest.raises(BadInput, match="--train-steps 0: must be at least 1"):
        configs.experiment_overrides("tiny", 1, vocab_size=100, train_steps=0)

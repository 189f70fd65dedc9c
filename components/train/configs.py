"""Training configurations: the single source of truth for model sizes, stages and schedules.

Everything that says how a model is trained comes from here: the trainer builds Model Garden's
``bert/pretraining`` experiment from :func:`experiment_overrides`, the committed YAML files under
``experiments/`` are rendered from the same function (``python -m components.train.configs``
rewrites them; a test fails when they are stale), and :func:`model_description` is what the trainer
writes beside the checkpoints as ``bertja_model.json`` for the converter.

Numbers are the recipe's (cl-tohoku/bert-japanese v3) except the ``tiny`` profile, which is ours:
a model small enough to train on a laptop CPU in seconds, from the same TFRecords.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import yaml

from components.errors import BadInput

EXPERIMENT = "bert/pretraining"  # Model Garden experiment every profile starts from
MODEL_DESCRIPTION = "bertja_model.json"  # written in the model dir; read by components/convert
MODEL_DESCRIPTION_VERSION = 1
EXPERIMENTS_DIR = os.path.join(os.path.dirname(__file__), "experiments")

# Model Garden's "gelu" is the tanh approximation, which Hugging Face calls "gelu_new".
MODEL_GARDEN_ACTIVATION = "gelu"
HF_ACTIVATION = "gelu_new"
# bertja_model.json keys that fix the network's shape: a model dir, an init checkpoint or a
# checkpoint being converted that has other values belongs to another model.
ARCHITECTURE_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size")
LAYER_NORM_EPS = 1e-12  # Model Garden's BertEncoderV2 default; Hugging Face's BertConfig default too

# The recipes' vocabularies (the trainer uses the tokenizer dir's actual size): v3's, and
# yoheikikuta's SentencePiece model (the one SentencePiece preset Model Garden trains).
TOKENIZER_VOCAB_SIZES = {"wordpiece": 32768, "character": 7027, "sentencepiece": 32000}
# MLM-only experiment files (no NSP head) are written for these tokenizers.
MLM_ONLY_TOKENIZERS = ("sentencepiece",)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One pretraining stage: its corpus and the shape of its TFRecords."""
    number: int
    corpus: str
    seq_length: int
    max_predictions_per_seq: int


STAGES = {
    1: Stage(1, "cc-100", seq_length=128, max_predictions_per_seq=19),
    2: Stage(2, "wikipedia", seq_length=512, max_predictions_per_seq=76),
}


@dataclasses.dataclass(frozen=True)
class Profile:
    """A model size with its optimisation schedule."""
    name: str
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    intermediate_size: int
    peak_learning_rate: float
    global_batch_size: dict[int, int]  # stage -> examples per step
    train_steps: int
    warmup_steps: int
    checkpoint_interval: int
    max_to_keep: int
    steps_per_loop: int  # also the heartbeat/progress interval
    enable_xla: bool
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    dropout_rate: float = 0.1
    initializer_range: float = 0.02


# steps_per_loop is ours (the reference used 1000): it only sets how often the host reports, and the
# TPU controller declares a VM lost after 20 min without a heartbeat. The recipe's slowest case,
# large stage 2 on a v3-8 (33 days / 1M steps, ~2.9 s/step), reports every ~10 min with 200.
_RECIPE_SCHEDULE = dict(global_batch_size={1: 2048, 2: 512}, train_steps=1_000_000, warmup_steps=10_000,
                        checkpoint_interval=20_000, max_to_keep=5, steps_per_loop=200, enable_xla=True)

PROFILES = {
    "tiny": Profile("tiny", hidden_size=64, num_layers=2, num_attention_heads=2, intermediate_size=256,
                    peak_learning_rate=1e-3, global_batch_size={1: 16, 2: 4}, train_steps=100,
                    warmup_steps=10, checkpoint_interval=50, max_to_keep=3, steps_per_loop=10,
                    enable_xla=False),
    "base": Profile("base", hidden_size=768, num_layers=12, num_attention_heads=12, intermediate_size=3072,
                    peak_learning_rate=1e-4, **_RECIPE_SCHEDULE),
    "large": Profile("large", hidden_size=1024, num_layers=24, num_attention_heads=16, intermediate_size=4096,
                     peak_learning_rate=5e-5, **_RECIPE_SCHEDULE),
}


def profile(name: str) -> Profile:
    if name not in PROFILES:
        raise BadInput(f"--config {name!r}: no such training config (choose from {', '.join(PROFILES)})")
    return PROFILES[name]


def stage(number: int | str) -> Stage:
    try:
        return STAGES[int(number)]
    except (KeyError, ValueError):
        raise BadInput(f"--stage {number!r}: no such stage (choose from {', '.join(map(str, STAGES))})") from None


def warmup_steps(prof: Profile, train_steps: int) -> int:
    """The profile's warmup, shortened for runs too short for it (at most a tenth of the run)."""
    return max(1, min(prof.warmup_steps, train_steps // 10))


def experiment_overrides(config: str, stage_number: int, *, vocab_size: int,
                         train_steps: int | None = None, next_sentence_prediction: bool = True) -> dict:
    """What to override in Model Garden's ``bert/pretraining`` experiment (nested, YAML-able).

    Input paths, ``init_checkpoint`` and the distribution strategy are per run and not in here.
    ``next_sentence_prediction=False`` (MLM-only data): no classification head, set explicitly as
    ``cls_heads: []`` (the experiment's default has the NSP head), and no ``next_sentence_labels``.
    """
    prof, st = profile(config), stage(stage_number)
    steps = prof.train_steps if train_steps is None else int(train_steps)
    if steps < 1:
        raise BadInput(f"--train-steps {steps}: must be at least 1")
    batch = prof.global_batch_size[st.number]
    data = {
        "seq_length": st.seq_length,
        "max_predictions_per_seq": st.max_predictions_per_seq,
        "global_batch_size": batch,
        "use_next_sentence_label": bool(next_sentence_prediction),
        "use_position_id": False,
        "use_v2_feature_names": True,
        "file_type": "tfrecord_compressed",  # our TFRecords are GZIP (the reference configs lack this)
    }
    return {
        "runtime": {"enable_xla": prof.enable_xla},
        "task": {
            "model": {
                "encoder": {"type": "bert", "bert": {
                    "vocab_size": int(vocab_size),
                    "hidden_size": prof.hidden_size,
                    "num_layers": prof.num_layers,
                    "num_attention_heads": prof.num_attention_heads,
                    "intermediate_size": prof.intermediate_size,
                    "hidden_activation": MODEL_GARDEN_ACTIVATION,
                    "dropout_rate": prof.dropout_rate,
                    "attention_dropout_rate": prof.dropout_rate,
                    "max_position_embeddings": prof.max_position_embeddings,
                    "type_vocab_size": prof.type_vocab_size,
                    "initializer_range": prof.initializer_range,
                }},
                "cls_heads": [{"name": "next_sentence", "inner_dim": prof.hidden_size, "num_classes": 2,
                               "activation": "tanh", "dropout_rate": prof.dropout_rate, "cls_token_idx": 0}]
                if next_sentence_prediction else [],
                "mlm_activation": MODEL_GARDEN_ACTIVATION,
                "mlm_initializer_range": prof.initializer_range,
            },
            "train_data": {**data, "is_training": True, "drop_remainder": True},
            "validation_data": {**data, "is_training": False, "drop_remainder": False},
        },
        "trainer": {
            "train_steps": steps,
            "steps_per_loop": min(prof.steps_per_loop, steps),
            "summary_interval": min(prof.steps_per_loop, steps),
            "checkpoint_interval": prof.checkpoint_interval,
            "max_to_keep": prof.max_to_keep,
            "optimizer_config": {
                "optimizer": {"type": "adamw", "adamw": {
                    "weight_decay_rate": 0.01,
                    "exclude_from_weight_decay": ["LayerNorm", "layer_norm", "bias"],
                    "beta_1": 0.9,
                    "beta_2": 0.999,
                    "epsilon": 1e-7,
                    "gradient_clip_norm": 1.0,
                }},
                "learning_rate": {"type": "polynomial", "polynomial": {
                    "initial_learning_rate": prof.peak_learning_rate,
                    "decay_steps": steps,
                    "end_learning_rate": 0.0,
                    "power": 1.0,
                    "cycle": False,
                }},
                "warmup": {"type": "polynomial", "polynomial": {
                    "warmup_steps": warmup_steps(prof, steps),
                    "power": 1.0,
                }},
            },
        },
    }


def model_description(config: str, *, vocab_size: int, tokenizer: dict, stage_number: int,
                      encoder: dict | None = None, train_data: dict | None = None,
                      next_sentence_prediction: bool = True) -> dict:
    """``bertja_model.json``: what a converter needs to rebuild the network exactly.

    Keys mirror Hugging Face's ``BertConfig`` where one exists, so a converter can pass them on.
    ``encoder``/``train_data`` are the run's final Model Garden settings (``task.model.encoder.bert``
    and ``task.train_data`` as dicts, overrides applied); without them the profile's values are used.
    """
    prof, st = profile(config), stage(stage_number)
    enc = experiment_overrides(config, stage_number, vocab_size=vocab_size)["task"]["model"]["encoder"]["bert"]
    enc.update(encoder or {})
    data = {"seq_length": st.seq_length, "max_predictions_per_seq": st.max_predictions_per_seq, **(train_data or {})}
    activation = enc["hidden_activation"]
    return {
        "format_version": MODEL_DESCRIPTION_VERSION,
        "experiment": EXPERIMENT,
        "config": prof.name,
        "stage": st.number,
        "seq_length": int(data["seq_length"]),
        "max_predictions_per_seq": int(data["max_predictions_per_seq"]),
        "vocab_size": int(enc["vocab_size"]),
        "hidden_size": int(enc["hidden_size"]),
        "num_hidden_layers": int(enc["num_layers"]),
        "num_attention_heads": int(enc["num_attention_heads"]),
        "intermediate_size": int(enc["intermediate_size"]),
        "max_position_embeddings": int(enc["max_position_embeddings"]),
        "type_vocab_size": int(enc["type_vocab_size"]),
        "hidden_act": HF_ACTIVATION if activation == MODEL_GARDEN_ACTIVATION else activation,
        "model_garden_activation": activation,
        "hidden_dropout_prob": float(enc["dropout_rate"]),
        "attention_probs_dropout_prob": float(enc["attention_dropout_rate"]),
        "initializer_range": float(enc["initializer_range"]),
        "layer_norm_eps": LAYER_NORM_EPS,
        # MLM only: the checkpoint has no classification head.
        "next_sentence_head": {"name": "next_sentence", "inner_dim": int(enc["hidden_size"]),
                               "activation": "tanh", "num_classes": 2} if next_sentence_prediction else None,
        "tokenizer": dict(tokenizer),
    }


# ---------------------------------------------------------------------------
# Committed experiment YAML files (for reading, and for `python -m official.nlp.train`)
# ---------------------------------------------------------------------------

def experiment_name(config: str, tokenizer_type: str, stage_number: int, next_sentence_prediction: bool = True) -> str:
    objective = "" if next_sentence_prediction else "_mlm"
    return f"{config}_{tokenizer_type}{objective}_stage{stage_number}_{stage(stage_number).corpus}"


def experiment_yaml(config: str, tokenizer_type: str, stage_number: int, next_sentence_prediction: bool = True) -> str:
    objective = "MLM + NSP" if next_sentence_prediction else "MLM only"
    header = (f"# Generated by `python -m components.train.configs` from components/train/configs.py:\n"
              f"# do not edit. Model Garden experiment {EXPERIMENT}, {config} {tokenizer_type}, "
              f"stage {stage_number} ({stage(stage_number).corpus}), {objective}.\n"
              f"# Per run: task.train_data.input_path, task.init_checkpoint (stage 2; none for one-stage "
              f"recipes, which train stage 2 from scratch), runtime.distribution_strategy.\n")
    body = experiment_overrides(config, stage_number, vocab_size=TOKENIZER_VOCAB_SIZES[tokenizer_type],
                                next_sentence_prediction=next_sentence_prediction)
    return header + yaml.safe_dump(body, sort_keys=False, default_flow_style=False)


def all_experiments() -> dict[str, str]:
    """File name -> YAML text for every profile x tokenizer x stage, and the MLM-only ones."""
    variants = [(t, True) for t in TOKENIZER_VOCAB_SIZES] + [(t, False) for t in MLM_ONLY_TOKENIZERS]
    return {f"{experiment_name(c, t, s, nsp)}.yaml": experiment_yaml(c, t, s, nsp)
            for c in PROFILES for t, nsp in variants for s in STAGES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.train.configs",
                                     description="Rewrite (or --check) the experiment YAML files.")
    parser.add_argument("--out", default=EXPERIMENTS_DIR)
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is missing or stale")
    args = parser.parse_args(argv)
    stale = []
    for name, text in all_experiments().items():
        path = os.path.join(args.out, name)
        current = open(path, encoding="utf-8").read() if os.path.exists(path) else None
        if current == text:
            continue
        stale.append(name)
        if not args.check:
            os.makedirs(args.out, exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    for name in stale:
        print(f"{'stale' if args.check else 'wrote'}: {os.path.join(args.out, name)}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())

"""``bertja train``: one pretraining stage with TF Model Garden (CPU locally, Cloud TPU for real);
``--engine torch``: the PyTorch trainer's stages instead (``components.torch_train.cli``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from components.train import configs
from components.train.trainer import STRATEGIES


ENGINES = ("model-garden", "torch")


def main(argv: list[str], prog: str = "bertja train") -> int:
    engine = argparse.ArgumentParser(add_help=False)
    engine.add_argument("--engine", default="model-garden", choices=ENGINES)
    chosen, rest = engine.parse_known_args(argv)
    if chosen.engine == "torch":
        from components.torch_train.cli import main as torch_main

        return torch_main(rest, prog=f"{prog} --engine torch")
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train (or resume) one BERT pretraining stage with TF Model Garden's bert/pretraining "
                    "experiment. Resumes from the latest checkpoint in --model-dir when there is one; "
                    "--init-checkpoint applies only to a fresh start. Prints the final metrics as JSON.")
    parser.add_argument("--engine", default="model-garden", choices=ENGINES,
                        help="model-garden (this, TensorFlow) or torch (bertja train --engine torch --help)")
    parser.add_argument("--config", required=True, help=f"model profile: {' | '.join(configs.PROFILES)}")
    parser.add_argument("--stage", required=True, type=int,
                        help="; ".join(f"{s.number}: {s.corpus}, seq {s.seq_length}, "
                                       f"{s.max_predictions_per_seq} predictions" for s in configs.STAGES.values()))
    parser.add_argument("--data", required=True,
                        help="GZIP TFRecord files: a glob, or globs/URIs separated by commas (local, file://, gs://)")
    parser.add_argument("--model-dir", required=True, help="checkpoints, params.yaml, bertja_model.json, status/")
    parser.add_argument("--tokenizer-dir", required=True,
                        help="directory with vocab.txt and tokenizer_config.json (vocab size, wordpiece/character)")
    parser.add_argument("--init-checkpoint", default=None,
                        help="stage 2: the stage 1 model dir (or a ckpt-N prefix) to take the weights from")
    parser.add_argument("--strategy", default="one_device", choices=STRATEGIES)
    parser.add_argument("--tpu", default="local", help="TPU address for --strategy tpu (default: local, on a TPU VM)")
    parser.add_argument("--train-steps", type=int, default=None,
                        help="steps in this stage (default: the profile's; the LR schedule decays to 0 by then)")
    parser.add_argument("--next-sentence-prediction", action=argparse.BooleanOptionalAction, default=True,
                        help="train the NSP head (--no-next-sentence-prediction: MLM only, for MLM-only data)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="any Model Garden experiment key, e.g. task.train_data.global_batch_size=256 "
                             "(repeatable; values are YAML)")
    args = parser.parse_args(argv)

    from components.train.trainer import train  # deferred like TensorFlow itself: keeps --help light

    # Orbit prints its own progress to stdout; stdout carries only the final JSON.
    with contextlib.redirect_stdout(sys.stderr):
        result = train(config=args.config, stage=args.stage, data=args.data, model_dir=args.model_dir,
                       tokenizer_dir=args.tokenizer_dir, init_checkpoint=args.init_checkpoint,
                       strategy=args.strategy, tpu=args.tpu, train_steps=args.train_steps,
                       overrides=args.override, next_sentence_prediction=args.next_sentence_prediction)
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0

"""``bertja evaluate MODEL_DIR [--eval-data FILE ...] [--sentences FILE] [--output-dir DIR] ...``."""

from __future__ import annotations

import argparse
import json

from components.evaluate import core


def main(argv: list[str], prog: str = "bertja evaluate") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Evaluate a converted Hugging Face BERT on CPU: fill-mask on fixed Japanese sentences, "
                    "masked-LM / next-sentence accuracy on held-out pretraining TFRecords, and optionally a "
                    "small sequence-classification fine-tuning run.")
    parser.add_argument("model_dir", help="converted model directory (bertja convert), local or gs://")
    parser.add_argument("--eval-data", nargs="+", default=[], metavar="FILE",
                        help="held-out pretraining TFRecords (Model Garden v2 features, GZIP or plain)")
    parser.add_argument("--sentences", help="fill-mask sentences, one per line, each with one [MASK] "
                                            "(default: a built-in list of 10)")
    parser.add_argument("--output-dir", default="evaluation",
                        help="where metrics.json, report.md and fill_mask.json go (default: %(default)s)")
    parser.add_argument("--top-k", type=int, default=5, help="fill-mask answers per sentence (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="examples per batch (default: %(default)s)")
    parser.add_argument("--max-eval-batches", type=int, default=core.DEFAULT_MAX_EVAL_BATCHES,
                        help="stop the masked-LM evaluation after N batches; 0 = all (default: %(default)s)")
    parser.add_argument("--finetune-train", metavar="JSONL",
                        help='classification training data: {"text","label"} or {"sentence1","sentence2","label"} per line')
    parser.add_argument("--finetune-eval", metavar="JSONL", help="classification evaluation data (same format)")
    parser.add_argument("--finetune-epochs", type=int, default=2, help="(default: %(default)s)")
    parser.add_argument("--finetune-max-seq-length", type=int, default=128, help="(default: %(default)s)")
    parser.add_argument("--finetune-learning-rate", type=float, default=5e-5, help="(default: %(default)s)")
    parser.add_argument("--finetune-batch-size", type=int, default=16, help="(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = core.evaluate_model(
        args.model_dir, output_dir=args.output_dir, eval_data=args.eval_data, sentences=args.sentences,
        top_k=args.top_k, batch_size=args.batch_size, max_eval_batches=args.max_eval_batches,
        finetune_train=args.finetune_train, finetune_eval=args.finetune_eval,
        finetune_epochs=args.finetune_epochs, finetune_max_seq_length=args.finetune_max_seq_length,
        finetune_learning_rate=args.finetune_learning_rate,
        finetune_batch_size=args.finetune_batch_size, seed=args.seed)
    print(result["markdown"])
    print(json.dumps(result["metrics"], ensure_ascii=False, indent=2))
    return 0

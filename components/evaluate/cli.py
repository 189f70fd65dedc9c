"""``bertja evaluate MODEL_DIR [--eval-data FILE ...] [--sentences FILE] [--output-dir DIR] ...``;
``bertja evaluate MODEL_DIR --jglue DIR [--tasks ...] [--livedoor DIR] [--grid jglue|quick] [--seeds N]``."""

from __future__ import annotations

import argparse
import json

from components import storage
from components.evaluate import core, jglue


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
    group = parser.add_argument_group(
        "JGLUE / livedoor fine-tuning (the recipe's results table; replaces the checks above)")
    group.add_argument("--jglue", metavar="DIR",
                       help="JGLUE's repository or its datasets/ folder (<task>-v<version>/{train,valid}-v<version>.json)")
    group.add_argument("--tasks", default="",
                       help="comma-separated: " + ",".join(jglue.tasks.JGLUE_TASKS) + " (default: all but marc_ja, "
                            "which is no longer distributed)")
    group.add_argument("--livedoor", metavar="DIR", help="livedoor news corpus (text/<category>/<category>-NNNN.txt)")
    group.add_argument("--grid", choices=sorted(jglue.GRIDS), default="jglue",
                       help="jglue: lr {5e-5,3e-5,2e-5} x epochs {3,4}; quick: lr 5e-5, 1 epoch, max length <= 128 "
                            "(default: %(default)s)")
    group.add_argument("--seeds", type=int, default=1, help="seeds per grid point: mean and spread (default: %(default)s)")
    group.add_argument("--max-examples", type=int, help="keep the first N train and dev examples of each task")
    args = parser.parse_args(argv)
    storage.check_outputs([args.model_dir, *args.eval_data, args.sentences, args.finetune_train,
                           args.finetune_eval, args.jglue, args.livedoor], dirs=[args.output_dir])
    if args.jglue or args.livedoor:
        result = jglue.evaluate_jglue(args.model_dir, output_dir=args.output_dir, jglue_dir=args.jglue,
                                      task_names=args.tasks, livedoor_dir=args.livedoor, grid=args.grid,
                                      seeds=args.seeds, seed=args.seed, max_examples=args.max_examples)
        print(result["markdown"])
        print(json.dumps(result["results"], indent=2))
        return 0
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

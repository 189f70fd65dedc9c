"""``bertja bench train``: training throughput of one stage on this machine.

Runs the real ``bertja train`` as a child process (wall time and peak memory are its own) on
synthetic data of the stage's shapes (or on ``--data``/``--tokenizer-dir`` when given) and reports
the trainer's own steady-state rates from ``complete.json``: the first loop, which pays for tracing
(and XLA compiling), is left out of steps/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from components.benchmark import bertja_argv, gib, print_report, run_measured
from components.train import configs, status, synthetic


def main(argv: list[str], prog: str = "bertja bench train") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="tiny", choices=list(configs.PROFILES))
    parser.add_argument("--stage", type=int, default=1, choices=list(configs.STAGES))
    parser.add_argument("--steps", type=int, default=60, help="training steps (default 60)")
    parser.add_argument("--steps-per-loop", type=int, default=None,
                        help="steps between progress reports (default: steps/6, so rates are steady)")
    parser.add_argument("--tokenizer", default="wordpiece", choices=list(configs.TOKENIZER_VOCAB_SIZES),
                        help="synthetic vocabulary size: the recipe's for this tokenizer type")
    parser.add_argument("--data", default=None, help="real TFRecords to train on instead of synthetic ones")
    parser.add_argument("--tokenizer-dir", default=None, help="with --data: the tokenizer they were made with")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if bool(args.data) != bool(args.tokenizer_dir):
        parser.error("--data and --tokenizer-dir go together")

    prof, st = configs.profile(args.config), configs.stage(args.stage)
    batch = prof.global_batch_size[st.number]
    vocab_size = configs.TOKENIZER_VOCAB_SIZES[args.tokenizer]
    per_loop = args.steps_per_loop or max(1, args.steps // 6)
    with tempfile.TemporaryDirectory(prefix="bertja-bench-train-") as tmp:
        data, tokenizer_dir = args.data, args.tokenizer_dir
        if not data:
            tokenizer_dir = synthetic.write_tokenizer_dir(os.path.join(tmp, "tokenizer"), vocab_size=vocab_size,
                                                          subword_tokenizer_type=args.tokenizer)
            synthetic.write_records(os.path.join(tmp, "data.tfrecord.gz"), count=max(4 * batch, 64),
                                    seq_length=st.seq_length, max_predictions=st.max_predictions_per_seq,
                                    vocab_size=vocab_size)
            data = os.path.join(tmp, "*.tfrecord.gz")
        model_dir = os.path.join(tmp, "model")
        overrides = [f"trainer.steps_per_loop={per_loop}", f"trainer.summary_interval={per_loop}", *args.override]
        measured = run_measured(bertja_argv(
            "train", "--config", args.config, "--stage", str(args.stage), "--data", data,
            "--model-dir", model_dir, "--tokenizer-dir", tokenizer_dir, "--train-steps", str(args.steps),
            *(a for o in overrides for a in ("--override", o))),
            stdout=sys.stderr)  # the child's final JSON is not this report
        result = status.read(model_dir)["complete"]

    print_report(f"train: {args.config}, stage {st.number} ({st.corpus}), {os.cpu_count()} CPU cores", {
        "batch x seq_length": f"{batch} x {st.seq_length}",
        "vocab_size": vocab_size if not args.data else "from --tokenizer-dir",
        "steps": result["step"],
        "steps/s (after first loop)": result["steps_per_sec"],
        "examples/s": result["examples_per_sec"],
        "tokens/s (examples x seq)": result["examples_per_sec"] * st.seq_length,
        "final loss": result["loss"],
        "wall s (incl. TF start, tracing)": measured["wall_s"],
        "peak RSS": gib(measured["peak_rss_bytes"]),
    })
    return 0


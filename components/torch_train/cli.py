"""``bertja train --engine torch``: a plan's pretraining stages with the PyTorch trainer.

Under ``torchrun --nproc-per-node N`` every process runs this same command (DDP: gloo on CPU,
NCCL on GPU). Logs go to stderr; stdout carries only the final metrics as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from components import storage
from components.errors import BadInput
from components.torch_train import configs
from components.torch_train.trainer import PRECISIONS


def shard_dirs(data: str) -> list[str]:
    """Token-shard directories from comma-separated directories or globs over them."""
    from components.pretraining_data.shards import META_FILE

    found: list[str] = []
    for part in (p.strip() for p in str(data).split(",") if p.strip()):
        if storage.exists(storage.join(part, META_FILE)):
            matched = [part]
        else:
            matched = [storage.dirname(m) for m in storage.glob(storage.join(part, META_FILE))]
        if not matched:
            raise BadInput(f"--data {part}: no token-shards directory there (no {META_FILE})")
        found += [m for m in matched if m not in found]
    if not found:
        raise BadInput("--data: empty")
    return found


def _numbers(kind):
    def parse(text: str):
        try:
            values = [kind(v) for v in text.split(",")]
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {kind.__name__}s separated by commas") from e
        return values if len(values) > 1 else values[0]
    return parse


def main(argv: list[str], prog: str = "bertja train --engine torch") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", required=True, help=" | ".join(f"{p.name}: {p.description}".replace("%", "%%")
                                                                 for p in configs.PLANS.values()))
    parser.add_argument("--architecture", default=None,
                        help=f"model shape (default: the plan's): {' | '.join(configs.ARCHITECTURES)}")
    parser.add_argument("--data", required=True,
                        help="token-shards directories (bertja pretraining-data --format shards): comma-separated, "
                             "globs allowed (local, file://, gs://)")
    parser.add_argument("--model-dir", required=True,
                        help="checkpoints, status/, stage{N}/hf and the final Hugging Face directory hf/")
    parser.add_argument("--tokenizer-dir", required=True, help="the tokenizer the shards were made with")
    for flag, kind, what in (("--seq-length", int, "sequence length"), ("--train-steps", int, "optimizer steps"),
                             ("--global-batch-size", int, "sequences per optimizer step"),
                             ("--learning-rate", float, "peak learning rate"),
                             ("--warmup-steps", int, "warmup steps")):
        parser.add_argument(flag, type=_numbers(kind), default=None,
                            help=f"{what} per stage: one value for all, or one per stage separated by commas "
                                 "(default: the plan's)")
    parser.add_argument("--micro-batch-size", type=int, default=8,
                        help="sequences per forward pass and process; the rest is gradient accumulation")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (masking, packing)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="auto: bf16 autocast where the device has it (CUDA), else fp32")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model (on CPU it needs a C++ compiler at run time)")
    parser.add_argument("--log-every", type=int, default=10, help="steps between log lines and heartbeats")
    parser.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    parser.add_argument("--stop-at", type=int, default=None,
                        help="stop the current stage after this many steps, with a checkpoint (rerun to resume)")
    args = parser.parse_args(argv)
    if args.workers < 0 or args.log_every < 1 or args.checkpoint_every < 1:
        raise BadInput("--workers must be >= 0, --log-every and --checkpoint-every >= 1")

    from components.torch_train.trainer import train  # torch is imported only when training

    with contextlib.redirect_stdout(sys.stderr):  # transformers' progress bars are not the result
        result = train(plan=args.plan, architecture=args.architecture, data_uris=shard_dirs(args.data),
                       model_dir=args.model_dir, tokenizer_dir=args.tokenizer_dir, seq_lengths=args.seq_length,
                       train_steps=args.train_steps, global_batch_size=args.global_batch_size,
                       learning_rate=args.learning_rate, warmup_steps=args.warmup_steps,
                       micro_batch_size=args.micro_batch_size, workers=args.workers, seed=args.seed,
                       device=args.device, precision=args.precision, compile=args.compile,
                       log_every=args.log_every, checkpoint_every=args.checkpoint_every, stop_at=args.stop_at)
    result = {**result, "stages": [{k: v for k, v in s.items() if k != "history"} for s in result["stages"]]}
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0

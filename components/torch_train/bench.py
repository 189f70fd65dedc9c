"""``bertja bench train-torch``: the PyTorch trainer's throughput on this machine, against a plain
``transformers.Trainer`` loop on the same model, batches and optimizer steps.

Both run in this process, one after the other, on synthetic documents (random ids, lengths drawn
around the sequence length) packed and masked by the trainer's own loader. Our step time is the
trainer's steady state (the first step, which pays for start-up, is left out); the Trainer's is
timed per step by a callback, also without its first step. Peak memory is this process's maximum
RSS after our run (before the Trainer's).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

import numpy as np

from components.benchmark import gib, print_report
from components.tokenizer import files as tokenizer_files
from components.torch_train import configs, data

CONFIGS = {"tiny": ("modernbert-tiny", 32_768), "modernbert-130m": ("modernbert-130m", 102_400)}


def synthetic_documents(*, vocab_size: int, seq_length: int, tokens: int, seed: int = 0) -> data.Documents:
    rng = np.random.default_rng(seed)
    lengths = []
    while sum(lengths) < tokens:
        lengths.append(int(rng.integers(seq_length // 8, seq_length * 2)))
    return data.Documents.from_list([(rng.integers(data.FIRST_ORDINARY_ID, vocab_size, n), None) for n in lengths],
                                    vocab_size=vocab_size)


def synthetic_shards(root: str, *, shards: int, tokens: int, documents: int, vocab_size: int = 32_768,
                     sentence_length: int = 64, seed: int = 0) -> list[str]:
    """``shards`` token-shard directories under ``root`` holding ``tokens`` random ids in all, in
    ``documents`` documents of equal length (so a 10x corpus can keep its document count, and
    what grows is tokens alone), sentences of ``sentence_length``. Returns their paths."""
    from components.pretraining_data import shards as shard_format

    rng = np.random.default_rng(seed)
    dtype = shard_format.token_dtype(vocab_size)
    uris = []
    for k in range(shards):
        n_docs = documents // shards + (k < documents % shards)
        doc_len = max(1, tokens // documents)
        n = n_docs * doc_len
        ids = rng.integers(data.FIRST_ORDINARY_ID, vocab_size, n, dtype=dtype)
        per_doc = np.arange(sentence_length, doc_len, sentence_length)
        sentence_ends = (np.arange(n_docs)[:, None] * doc_len + np.append(per_doc, doc_len)[None, :]).ravel()
        document_ends = np.arange(1, n_docs + 1) * (len(per_doc) + 1)
        arrays = {"tokens": ids, "word_starts": np.packbits(rng.random(n) < 0.5),
                  "sentence_ends": sentence_ends.astype(np.int64), "document_ends": document_ends.astype(np.int64)}
        meta = {"format": shard_format.FORMAT, "version": shard_format.VERSION, "vocab_size": vocab_size,
                "dtype": dtype.name, "tokens": n, "sentences": len(sentence_ends), "documents": n_docs,
                "tokenizer": {"type": "sentencepiece", "word_splitter": "none"}, "source": "synthetic"}
        uri = os.path.join(root, f"shard-{k:05d}")
        shard_format.save_token_arrays(uri, arrays, meta)
        uris.append(uri)
    return uris


# Run in a fresh interpreter, so its peak RSS is the load's (this process has the trainer's).
# VmHWM, not ru_maxrss: Linux carries the parent's high-water mark into a forked child's maxrss.
_LOAD_PROBE = """
import json, sys, time

def hwm_kib():
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM:")).split()[1])

from components.torch_train import data
before = hwm_kib()
started = time.perf_counter()
docs = data.load_documents(sys.argv[2:], vocab_size=int(sys.argv[1]), tokenizer_type="sentencepiece")
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "documents": len(docs), "tokens": len(docs.ids), "before_kib": before,
                  "peak_kib": hwm_kib()}))
"""


def load_footprint(uris: list[str], vocab_size: int) -> dict:
    """Seconds and peak RSS of ``data.load_documents`` over ``uris`` in a fresh process."""
    import json
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", _LOAD_PROBE, str(vocab_size), *uris], capture_output=True, text=True,
                         check=True, cwd=root, env={**os.environ, "PYTHONPATH": root})
    return json.loads(out.stdout)


def load_rows(tokens: int, *, shards: int = 8, documents: int = 20_000) -> dict:
    """Report rows: loading ``tokens/10`` and ``tokens`` synthetic tokens (same documents)."""
    rows = {}
    for n in (tokens // 10, tokens):
        with tempfile.TemporaryDirectory(prefix="bertja-bench-load-") as tmp:
            got = load_footprint(synthetic_shards(tmp, shards=shards, tokens=n, documents=documents), 32_768)
        label = f"load {got['tokens'] / 1e6:.0f}M tokens ({got['tokens'] * 2 / 2**20:.0f} MiB ids, {shards} shards)"
        rows[f"{label}: s"] = got["seconds"]
        rows[f"{label}: peak RSS (fresh process; before load)"] = (
            f"{gib(got['peak_kib'] * 1024)} ({gib(got['before_kib'] * 1024)})")
    return rows


def _hf_trainer_step_seconds(arch, documents, *, seq_length, micro_batch, accumulation, steps, lr, seed) -> float:
    """Median seconds per optimizer step of transformers.Trainer on our packed, masked batches."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    model = configs.build_model(arch, vocab_size=documents.vocab_size, max_length=seq_length, seed=seed)
    ds = data.PretrainingDataset(documents, seq_length=seq_length, packing="best-fit", mask_rate=0.15,
                                 whole_word=False, seed=seed, stage=1, epoch=0)

    def collate(items):
        batch = data.collate(items)
        seg = batch["segment_ids"]
        full = data.attention_masks(seg)
        mask = ({"full_attention": full,
                 "sliding_attention": data.attention_masks(seg, sliding_window=model.config.sliding_window)}
                if arch.family == "modernbert" else full)
        return {"input_ids": batch["input_ids"], "labels": batch["labels"], "attention_mask": mask,
                "position_ids": batch["position_ids"] + configs.position_offset(arch)}

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    with tempfile.TemporaryDirectory(prefix="bertja-bench-hf-") as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=micro_batch,
                                 gradient_accumulation_steps=accumulation, max_steps=steps, learning_rate=lr,
                                 warmup_steps=0, lr_scheduler_type="linear", logging_steps=steps, save_strategy="no",
                                 report_to=[], use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
                                 remove_unused_columns=False, max_grad_norm=1.0, seed=seed)
        Trainer(model=model, args=args, train_dataset=torch.utils.data.Subset(ds, range(len(ds))),
                data_collator=collate, callbacks=[Timer()]).train()
    steady = times[1:] or times
    return float(np.median(steady))


def main(argv: list[str], prog: str = "bertja bench train-torch") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="tiny", choices=list(CONFIGS))
    parser.add_argument("--seq-length", type=int, default=None, help="default: 256 (tiny), 1024 (130m)")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per trainer (default 8)")
    parser.add_argument("--micro-batch-size", type=int, default=2)
    parser.add_argument("--accumulation", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--load-tokens", type=int, default=20_000_000,
                        help="also time loading a synthetic shard set of this many tokens and of a tenth of it "
                             "(memory-mapped: peak RSS should not grow); 0 skips (default 20M)")
    args = parser.parse_args(argv)

    from components.torch_train import trainer

    name, vocab_size = CONFIGS[args.config]
    arch = configs.architecture(name)
    seq_length = args.seq_length or (256 if args.config == "tiny" else 1024)
    batch = args.micro_batch_size * args.accumulation
    documents = synthetic_documents(vocab_size=vocab_size, seq_length=seq_length,
                                    tokens=seq_length * batch * (args.steps + 2))
    with tempfile.TemporaryDirectory(prefix="bertja-bench-torch-") as tmp:
        tok = os.path.join(tmp, "tokenizer")
        tokenizer_files.write_tokenizer_info(tok, tokenizer_files.tokenizer_info(
            type="sentencepiece", word_splitter="none", mecab_dic="none", do_lower_case=False, vocab_size=vocab_size))
        started = time.monotonic()
        result = trainer.train(plan="bybert", architecture=name, model_dir=os.path.join(tmp, "model"),
                               tokenizer_dir=tok, documents=documents, seq_lengths=seq_length,
                               train_steps=args.steps, global_batch_size=batch, warmup_steps=0,
                               learning_rate=1e-4, micro_batch_size=args.micro_batch_size, workers=0,
                               device=args.device, log_every=max(1, args.steps // 4), checkpoint_every=10**9)
        wall = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    stage = result["stages"][0]
    ours = 1 / stage["steps_per_sec"]
    theirs = _hf_trainer_step_seconds(arch, documents, seq_length=seq_length, micro_batch=args.micro_batch_size,
                                      accumulation=args.accumulation, steps=args.steps, lr=1e-4, seed=0)
    print_report(f"train-torch: {name}, {seq_length} tokens, batch {batch}, {os.cpu_count()} CPU cores", {
        "parameters": _parameters(arch, vocab_size, seq_length),
        "tokens/s (after first step)": stage["tokens_per_sec"],
        "samples/s": stage["samples_per_sec"],
        "s/step (ours)": ours,
        "s/step (transformers.Trainer, same batches)": theirs,
        "ours / Trainer": ours / theirs,
        "final loss": stage["loss"],
        "wall s (ours, incl. build)": wall,
        "peak RSS (after ours)": gib(peak),
        **(load_rows(args.load_tokens) if args.load_tokens > 0 else {}),
    })
    return 0


def _parameters(arch, vocab_size: int, seq_length: int) -> str:
    import torch
    import transformers

    with torch.device("meta"):
        model = getattr(transformers, configs.FAMILIES[arch.family][1])(
            configs.model_config(arch, vocab_size=vocab_size, max_length=seq_length))
    return f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M"

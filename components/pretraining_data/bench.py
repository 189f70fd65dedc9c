"""``bertja bench pretraining-data CORPUS --vocab-dir DIR``: speed and memory of the step.

Runs the real command as a child process on the corpus and on its first half
(memory growth per input sentence = the difference between the two peaks),
with one worker and then with more, and compares the wall time with the MeCab
floor (one bare fugashi pass over the same sentences). With ``--reference DIR``
(a checkout of cl-tohoku/bert-japanese) it also runs the recipe's own
``create_pretraining_data.py`` on the same input, for the figures beside ours.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from components import storage
from components.benchmark import bertja_argv, gib, mecab_floor_seconds, print_report, run_measured
from components.pretraining_data.create import summary_uri
from components.tokenizer import files


def _first_half(corpus: str, path: str) -> int:
    """Writes the first half of the corpus's sentences (whole documents) to ``path``; returns its sentences."""
    lines = storage.read_text(corpus).splitlines()
    total = sum(1 for line in lines if line.strip())
    kept = 0
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
            if line.strip():
                kept += 1
            elif kept >= total // 2:
                break
    return kept


def _ours(corpus: str, vocab_dir: str, out_dir: str, name: str, args, workers: int) -> dict:
    output = os.path.join(out_dir, f"{name}.tfrecord.gz")
    measured = run_measured(bertja_argv(
        "pretraining-data", corpus, output, "--vocab-dir", vocab_dir, "--workers", str(workers),
        "--max-seq-length", str(args.max_seq_length), "--max-predictions", str(args.max_predictions),
        "--dupe-factor", str(args.dupe_factor)), stdout=subprocess.DEVNULL)
    return {**measured, **storage.read_json_object(summary_uri(output))}


def _statistics(path: str, args) -> dict:
    """Instances, mean tokens, mean masked tokens and random-next rate of a GZIP TFRecord file."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    spec = {"input_mask": tf.io.FixedLenFeature([args.max_seq_length], tf.int64),
            "masked_lm_weights": tf.io.FixedLenFeature([args.max_predictions], tf.float32),
            "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64)}
    n = tokens = masked = random_next = 0
    for batch in tf.data.TFRecordDataset(path, compression_type="GZIP").batch(4096):
        parsed = tf.io.parse_example(batch, spec)
        n += int(parsed["input_mask"].shape[0])
        tokens += int(tf.reduce_sum(parsed["input_mask"]))
        masked += float(tf.reduce_sum(parsed["masked_lm_weights"]))
        random_next += int(tf.reduce_sum(parsed["next_sentence_labels"]))
    return {"instances": n, "mean_tokens_per_instance": tokens / n, "mean_masked_per_instance": masked / n,
            "random_next_rate": random_next / n}


def _reference(reference_dir: str, corpus: str, vocab_dir: str, out_dir: str, name: str, args) -> dict:
    vocab = files.load_vocab(vocab_dir)
    output = os.path.join(out_dir, name + ".ref.tfrecord.gz")
    argv = [sys.executable, os.path.join(reference_dir, "create_pretraining_data.py"), "--verbosity=-1",
            f"--input_file={corpus}", f"--output_file={output}",
            f"--vocab_file={os.path.join(vocab_dir, files.VOCAB_FILE)}", "--word_tokenizer_type=mecab",
            f"--subword_tokenizer_type={vocab.subword_tokenizer_type}", f"--mecab_dic_type={vocab.mecab_dic}",
            "--do_whole_word_mask", "--gzip_compress", "--use_v2_feature_names",
            f"--max_seq_length={args.max_seq_length}", f"--max_predictions_per_seq={args.max_predictions}",
            f"--dupe_factor={args.dupe_factor}", "--do_lower_case" if vocab.do_lower_case else "--nodo_lower_case"]
    if vocab.subword_tokenizer_type == "character":
        argv.append("--vocab_has_no_subword_prefix")
    env = {**os.environ, "PYTHONPATH": reference_dir, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return {**run_measured(argv, env=env, stdout=subprocess.DEVNULL), "output": output}


def main(argv: list[str], prog: str = "bertja bench pretraining-data") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("corpus", metavar="CORPUS", help="a corpus shard (sentence per line, blank line between documents)")
    p.add_argument("--vocab-dir", required=True)
    p.add_argument("--workers", type=int, nargs="+", default=[2], help="worker counts to run besides 1")
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--max-predictions", type=int, default=19)
    p.add_argument("--dupe-factor", type=int, default=5)
    p.add_argument("--reference", metavar="DIR", help="checkout of cl-tohoku/bert-japanese to run beside ours")
    args = p.parse_args(argv)

    texts = [line.strip() for line in storage.read_text(args.corpus).splitlines() if line.strip()]
    cpu = time.process_time()
    floor, n_sentences = mecab_floor_seconds(texts)
    floor_cpu = time.process_time() - cpu
    del texts
    with tempfile.TemporaryDirectory(prefix="bench-pretraining-data-") as tmp:
        half = os.path.join(tmp, "half.txt")
        half_sentences = _first_half(args.corpus, half)
        full = _ours(args.corpus, args.vocab_dir, tmp, "full", args, 1)
        small = _ours(half, args.vocab_dir, tmp, "half", args, 1)
        growth = (full["peak_rss_bytes"] - small["peak_rss_bytes"]) / max(n_sentences - half_sentences, 1)
        rows = {
            "sentences": n_sentences,
            "instances": full["instances"],
            "mean tokens / masked / random-next": _triple(full),
            "mecab floor s (cpu s)": f"{floor:.2f} ({floor_cpu:.2f})",
            "wall s (cpu s), 1 worker": f"{full['wall_s']:.2f} ({full['cpu_s']:.2f})",
            "instances/s, 1 worker": round(full["instances"] / full["wall_s"]),
            "wall / floor (cpu / floor cpu)": f"{full['wall_s'] / floor:.2f} ({full['cpu_s'] / floor_cpu:.2f})",
            "peak RSS, 1 worker": gib(full["peak_rss_bytes"]),
            f"peak RSS at {half_sentences} sentences": gib(small["peak_rss_bytes"]),
            "RSS growth bytes/sentence": round(growth, 1),
        }
        for workers in args.workers:
            run = _ours(args.corpus, args.vocab_dir, tmp, f"w{workers}", args, workers)
            rows[f"wall s (cpu s), {workers} workers"] = f"{run['wall_s']:.2f} ({run['cpu_s']:.2f})"
            rows[f"instances/s, {workers} workers"] = round(run["instances"] / run["wall_s"])
            rows[f"peak RSS, {workers} workers (tree)"] = gib(run["peak_rss_bytes"])
        if args.reference:
            ref_full = _reference(args.reference, args.corpus, args.vocab_dir, tmp, "full", args)
            ref_half = _reference(args.reference, half, args.vocab_dir, tmp, "half", args)
            ref_stats = _statistics(ref_full["output"], args)
            rows["reference instances"] = ref_stats["instances"]
            rows["reference mean tokens / masked / random-next"] = _triple(ref_stats)
            rows["reference wall s (cpu s)"] = f"{ref_full['wall_s']:.2f} ({ref_full['cpu_s']:.2f})"
            rows["reference instances/s"] = round(ref_stats["instances"] / ref_full["wall_s"])
            rows["reference peak RSS"] = gib(ref_full["peak_rss_bytes"])
            rows[f"reference peak RSS at {half_sentences} sentences"] = gib(ref_half["peak_rss_bytes"])
            rows["reference RSS growth bytes/sentence"] = round(
                (ref_full["peak_rss_bytes"] - ref_half["peak_rss_bytes"]) / max(n_sentences - half_sentences, 1), 1)
            rows["speed-up vs reference, 1 worker (cpu)"] = (
                f"{ref_full['wall_s'] / full['wall_s']:.1f}x ({ref_full['cpu_s'] / full['cpu_s']:.1f}x)")
    print_report(f"pretraining-data on {args.corpus} (seq {args.max_seq_length}, dupe {args.dupe_factor})", rows)
    return 0


def _triple(stats: dict) -> str:
    return (f"{stats['mean_tokens_per_instance']:.2f} / {stats['mean_masked_per_instance']:.2f} / "
            f"{stats['random_next_rate']:.3f}")

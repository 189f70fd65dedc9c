"""``bertja bench pretraining-data [CORPUS...] --vocab-dir DIR``: speed and memory of the data step.

Two corpora by default: the bundled literary sample (``pipelines/sample_data/cc100/ja.txt.xz``,
Aozora Bunko prose) and technical Japanese made by ``bench_corpus.write_corpus``
(GNU/PostgreSQL message catalogs: Latin terms, options, code, paths and numbers;
GPL/LGPL/PostgreSQL licences, see that module). Each runs the real commands as
child processes and compares them with the MeCab floor (one bare fugashi pass
over the same sentences, in this process):

* from text: ``pretraining-data`` with 1 worker and with each of ``--workers``:
  its tokenize phase (MeCab + WordPiece/characters), its instance phase (layout,
  masking, serialising, gzip) and the whole step, as ratios to the floor, from
  the step's own summary (no interpreter start); wall and CPU of the process
  tree (CPU against the floor's CPU: the steadier figure on a shared machine); peak RSS (summed over the tree) and its growth per sentence (the first
  half of the corpus against all of it);
* from words: ``split-words`` once (what the pipeline runs once per shard for all
  variants), then ``pretraining-data --words`` with the same worker counts.

``--repeat N`` runs everything N times and keeps each figure's best (the machine
may be shared). With ``--reference DIR`` (a checkout of cl-tohoku/bert-japanese)
it also runs the recipe's ``create_pretraining_data.py`` on the same input.
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
from components.pretraining_data import bench_corpus
from components.pretraining_data.create import summary_uri
from components.tokenizer import files

BUNDLED = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
                       "pipelines", "sample_data", "cc100", "ja.txt.xz")


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


def _ours(corpus: str, vocab_dir: str, out_dir: str, name: str, args, workers: int, words: bool = False) -> dict:
    output = os.path.join(out_dir, f"{name}.tfrecord.gz")
    measured = run_measured(bertja_argv(
        "pretraining-data", corpus, output, "--vocab-dir", vocab_dir, "--workers", str(workers),
        "--max-seq-length", str(args.max_seq_length), "--max-predictions", str(args.max_predictions),
        "--dupe-factor", str(args.dupe_factor), *(["--words"] if words else [])), stdout=subprocess.DEVNULL)
    summary = storage.read_json_object(summary_uri(output))
    for path in (output, summary_uri(output)):
        os.remove(path)
    return {**measured, **summary}


def _split(corpus: str, mecab_dic: str, out_dir: str) -> tuple[str, dict]:
    output = os.path.join(out_dir, "words.words.gz")
    for path in (output, output + ".meta.json"):
        if os.path.exists(path):
            os.remove(path)
    measured = run_measured(bertja_argv("split-words", corpus, output, "--mecab-dic", mecab_dic),
                            stdout=subprocess.DEVNULL)
    return output, {**measured, **storage.read_json_object(output + ".meta.json")}


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


def _best(runs: list[dict]) -> dict:
    """Each timing's and memory figure's best over repeated runs (the rest is the same every run)."""
    out = dict(runs[0])
    for key in ("wall_s", "cpu_s", "peak_rss_bytes", "seconds", "tokenize_seconds"):
        if key in out:
            out[key] = min(run[key] for run in runs)
    if "tokenize_seconds" in out:  # the instance phase's best, on its own
        out["instance_seconds"] = min(run["seconds"] - run["tokenize_seconds"] for run in runs)
    return out


def _phases(rows: dict, label: str, run: dict, floor: float, floor_cpu: float) -> None:
    rows[f"{label}: tokenize / instances / step s"] = (
        f"{run['tokenize_seconds']:.2f} / {run['instance_seconds']:.2f} / {run['seconds']:.2f}")
    rows[f"{label}: tokenize / instances / step x floor"] = (
        f"{run['tokenize_seconds'] / floor:.2f} / {run['instance_seconds'] / floor:.2f} / "
        f"{run['seconds'] / floor:.2f}")
    rows[f"{label}: process wall s (cpu s, cpu x floor cpu), peak RSS"] = (
        f"{run['wall_s']:.2f} ({run['cpu_s']:.2f}, {run['cpu_s'] / floor_cpu:.2f}), {gib(run['peak_rss_bytes'])}")


def bench_corpus_rows(corpus: str, args, tmp: str) -> dict:
    """The report of one corpus (see the module docstring)."""
    mecab_dic = files.load_vocab(args.vocab_dir).mecab_dic
    texts = [line.strip() for line in storage.read_text(corpus).splitlines() if line.strip()]
    floors = []
    for _ in range(args.repeat):
        cpu = time.process_time()
        wall, n_sentences = mecab_floor_seconds(texts, mecab_dic)
        floors.append((wall, time.process_time() - cpu))
    floor, floor_cpu = min(floors)
    del texts
    half = os.path.join(tmp, "half.txt")
    half_sentences = _first_half(corpus, half)
    worker_counts = [1, *(w for w in args.workers if w != 1)]
    text_runs = {w: _best([_ours(corpus, args.vocab_dir, tmp, f"w{w}", args, w) for _ in range(args.repeat)])
                 for w in worker_counts}
    small = _best([_ours(half, args.vocab_dir, tmp, "half", args, 1) for _ in range(args.repeat)])
    full = text_runs[1]
    rows = {
        "sentences": n_sentences,
        "instances": full["instances"],
        "mean tokens / masked / random-next": _triple(full),
        "mecab floor s (cpu s)": f"{floor:.2f} ({floor_cpu:.2f})",
    }
    for w, run in text_runs.items():
        _phases(rows, f"text, {w} worker{'s' * (w > 1)}", run, floor, floor_cpu)
    growth = (full["peak_rss_bytes"] - small["peak_rss_bytes"]) / max(n_sentences - half_sentences, 1)
    rows[f"peak RSS at {half_sentences} sentences, 1 worker"] = gib(small["peak_rss_bytes"])
    rows["RSS growth bytes/sentence"] = round(growth, 1)
    if files.read_tokenizer_info(args.vocab_dir)["type"] in files.SUBWORD_TYPES:
        splits = [_split(corpus, mecab_dic, tmp) for _ in range(args.repeat)]
        words, split = splits[0][0], _best([s for _, s in splits])
        rows["split-words once: s x floor (wall s, cpu s, cpu x floor cpu), peak RSS"] = (
            f"{split['seconds'] / floor:.2f} ({split['wall_s']:.2f}, {split['cpu_s']:.2f}, "
            f"{split['cpu_s'] / floor_cpu:.2f}), {gib(split['peak_rss_bytes'])}")
        for w in worker_counts:
            run = _best([_ours(words, args.vocab_dir, tmp, f"words{w}", args, w, words=True)
                         for _ in range(args.repeat)])
            if run["instances"] != full["instances"] or run["tokens"] != full["tokens"]:
                raise RuntimeError(f"{corpus}: from words {run['instances']} instances, from text {full['instances']}")
            _phases(rows, f"words, {w} worker{'s' * (w > 1)}", run, floor, floor_cpu)
    if args.reference:
        ref_full = _reference(args.reference, corpus, args.vocab_dir, tmp, "full", args)
        ref_half = _reference(args.reference, half, args.vocab_dir, tmp, "half", args)
        ref_stats = _statistics(ref_full["output"], args)
        rows["reference instances"] = ref_stats["instances"]
        rows["reference mean tokens / masked / random-next"] = _triple(ref_stats)
        rows["reference wall s (cpu s)"] = f"{ref_full['wall_s']:.2f} ({ref_full['cpu_s']:.2f})"
        rows["reference peak RSS"] = gib(ref_full["peak_rss_bytes"])
        rows["reference RSS growth bytes/sentence"] = round(
            (ref_full["peak_rss_bytes"] - ref_half["peak_rss_bytes"]) / max(n_sentences - half_sentences, 1), 1)
        rows["speed-up vs reference, 1 worker (cpu)"] = (
            f"{ref_full['wall_s'] / full['wall_s']:.1f}x ({ref_full['cpu_s'] / full['cpu_s']:.1f}x)")
    return rows


def main(argv: list[str], prog: str = "bertja bench pretraining-data") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("corpora", nargs="*", metavar="CORPUS",
                   help="corpus shards (sentence per line, blank line between documents); default: the bundled "
                        "literary sample and the technical corpus")
    p.add_argument("--vocab-dir", required=True)
    p.add_argument("--technical-sentences", type=int, default=200_000,
                   help="sentences of the technical corpus (when no CORPUS is given)")
    p.add_argument("--workers", type=int, nargs="+", default=[2], help="worker counts to run besides 1")
    p.add_argument("--repeat", type=int, default=1, help="runs of each measurement (the best is kept)")
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--max-predictions", type=int, default=19)
    p.add_argument("--dupe-factor", type=int, default=5)
    p.add_argument("--reference", metavar="DIR", help="checkout of cl-tohoku/bert-japanese to run beside ours")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    with tempfile.TemporaryDirectory(prefix="bench-pretraining-data-") as tmp:
        corpora = list(args.corpora)
        if not corpora:
            technical = os.path.join(tmp, "technical.txt")
            bench_corpus.write_corpus(technical, args.technical_sentences)
            corpora = [BUNDLED, technical]
        for corpus in corpora:
            rows = bench_corpus_rows(corpus, args, tmp)
            print_report(f"pretraining-data on {corpus} (seq {args.max_seq_length}, dupe {args.dupe_factor}, "
                         f"{storage.basename(args.vocab_dir.rstrip('/'))})", rows)
    return 0


def _triple(stats: dict) -> str:
    return (f"{stats['mean_tokens_per_instance']:.2f} / {stats['mean_masked_per_instance']:.2f} / "
            f"{stats['random_next_rate']:.3f}")

"""``bertja pretraining-data INPUT OUTPUT --vocab-dir DIR``: one shard -> GZIP TFRecords, or token shards."""

from __future__ import annotations

import argparse
import json

from components.pretraining_data.create import SHUFFLE_DOCUMENTS, create_pretraining_data, summary_uri


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=(
        "Whole-word-masking BERT pretraining instances (masked LM + next sentence) for one corpus "
        "shard, as GZIP TFRecords with Model Garden's v2 feature names. Writes STEM.summary.json "
        "beside OUTPUT. --format shards: the shard tokenized once, unmasked (token ids, word starts, "
        "sentence and document ends) into the directory OUTPUT, for the PyTorch trainer."))
    p.add_argument("input", metavar="INPUT", help="shard: sentence per line, blank line between documents "
                   "(plain, .gz or .xz; local path, file:// or gs://)")
    p.add_argument("output", metavar="OUTPUT", help="a .tfrecord.gz path, or with --num-output-files K > 1 "
                   "a prefix: STEM-0000i-of-0000K.tfrecord.gz")
    p.add_argument("--words", action="store_true", help="INPUT is the shard's word-split file from "
                   "'bertja split-words' (wordpiece/character tokenizers): MeCab does not run, output is the same")
    p.add_argument("--vocab-dir", required=True, help="tokenizer directory (any type: bertja_tokenizer.json "
                   "says how it splits words)")
    p.add_argument("--format", default="tfrecord", choices=("tfrecord", "shards"),
                   help="tfrecord: masked instances for Model Garden; shards: token ids for the PyTorch trainer "
                   "(the instance and masking options below do not apply)")
    p.add_argument("--no-next-sentence-prediction", dest="next_sentence_prediction", action="store_false",
                   help="MLM only: [CLS] A [SEP] instances, no next_sentence_labels")
    p.add_argument("--no-whole-word-masking", dest="whole_word_masking", action="store_false",
                   help="mask tokens one by one instead of whole words")
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--max-predictions", type=int, default=19, help="masked LM predictions per instance")
    p.add_argument("--dupe-factor", type=int, default=5, help="passes over the documents (different masks)")
    p.add_argument("--masked-lm-prob", type=float, default=0.15)
    p.add_argument("--short-seq-prob", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--do-lower-case", action=argparse.BooleanOptionalAction, default=None,
                   help="lowercase text (default: the vocab dir's tokenizer_config.json)")
    p.add_argument("--workers", type=int, default=1, help="processes (output is the same for any number)")
    p.add_argument("--num-output-files", type=int, default=1)
    p.add_argument("--shuffle-documents", type=int, default=SHUFFLE_DOCUMENTS,
                   help="documents of a pass whose instances are shuffled together (one unit of work)")
    return p


def main(argv: list[str], prog: str = "bertja pretraining-data") -> int:
    args = build_parser(prog).parse_args(argv)
    if args.format == "shards":
        from components.pretraining_data.shards import write_token_shards

        meta = write_token_shards(args.input, args.output, args.vocab_dir, workers=args.workers,
                                  words=args.words)
        print(json.dumps({**meta, "output": args.output}, ensure_ascii=False, indent=2))
        return 0
    summary = create_pretraining_data(
        args.input, args.output, args.vocab_dir, max_seq_length=args.max_seq_length,
        max_predictions=args.max_predictions, dupe_factor=args.dupe_factor,
        masked_lm_prob=args.masked_lm_prob, short_seq_prob=args.short_seq_prob, seed=args.seed,
        do_lower_case=args.do_lower_case, workers=args.workers, num_output_files=args.num_output_files,
        shuffle_documents=args.shuffle_documents, whole_word_masking=args.whole_word_masking,
        next_sentence_prediction=args.next_sentence_prediction, words=args.words)
    print(json.dumps({**summary, "summary": summary_uri(args.output)}, ensure_ascii=False, indent=2))
    return 0

"""``bertja corpus wiki | split | sample | aozora``: build sentence corpora.

Each command prints its summary as one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json


def _wiki(args) -> dict:
    from components.corpus.wiki import build_wiki_corpus

    return build_wiki_corpus(args.input, args.output, min_length=args.min_length, max_length=args.max_length,
                             mecab_dic=args.mecab_dic, workers=args.workers)


def _split(args) -> dict:
    from components.corpus.split import split_corpus

    return split_corpus(args.inputs, args.output_dir, num_files=args.num_files, seed=args.seed)


def _sample(args) -> dict:
    from components.corpus.sample import sample_lines

    return sample_lines(args.inputs, args.output, lines=args.lines, seed=args.seed)


def _aozora(args) -> dict:
    from components.corpus.aozora import build_aozora_corpus

    return build_aozora_corpus(args.aozora_dir, args.output, sentences=args.sentences)


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Build sentence corpora (one sentence per line, "
                                     "a blank line between documents). Paths may be local, file:// or gs://.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("wiki", help="CirrusSearch content dump (.json.gz) -> sentence corpus (SPEC 6.1)")
    p.add_argument("input", help="jawiki-YYYYMMDD-cirrussearch-content.json.gz")
    p.add_argument("output", help="corpus file; gzip-compressed if it ends in .gz")
    p.add_argument("--min-length", type=int, default=10, help="shortest sentence kept, in characters (10)")
    p.add_argument("--max-length", type=int, default=200, help="longest sentence kept, in characters (200)")
    p.add_argument("--mecab-dic", default="unidic_lite",
                   help="unidic_lite (default), unidic, ipadic or a dictionary directory")
    p.add_argument("--workers", type=int, default=1, help="processes (output is the same for any number)")
    p.set_defaults(run=_wiki)

    p = sub.add_parser("split", help="merge corpora and deal whole documents into N shards (SPEC 6.2)")
    p.add_argument("inputs", nargs="+", help="corpus files (plain, .gz or .xz)")
    p.add_argument("--output-dir", required=True, help="where corpus_01.txt ... are written")
    p.add_argument("--num-files", type=int, required=True, help="number of shards")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_split)

    p = sub.add_parser("sample", help="K random non-empty lines, e.g. for tokenizer training")
    p.add_argument("inputs", nargs="+", help="corpus files (plain, .gz or .xz)")
    p.add_argument("--output", required=True)
    p.add_argument("--lines", type=int, required=True, help="number of lines (K)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_sample)

    p = sub.add_parser("aozora", help="public-domain Aozora Bunko prose -> corpus (test and benchmark data)")
    p.add_argument("aozora_dir", help="a checkout of aozorahack/aozorabunko_text (holding cards/)")
    p.add_argument("output")
    p.add_argument("--sentences", type=int, default=200_000, help="about this many sentences (whole documents)")
    p.set_defaults(run=_aozora)
    return parser


def main(argv: list[str], prog: str = "bertja corpus") -> int:
    args = _parser(prog).parse_args(argv)
    print(json.dumps(args.run(args), ensure_ascii=False))
    return 0

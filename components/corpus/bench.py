"""``bertja bench corpus-wiki``: the Wikipedia corpus step against the MeCab floor.

Runs ``bertja corpus wiki`` as a child process with 1 and N workers (wall time,
peak RSS of the process tree) and times one bare fugashi pass over the same
cleaned page texts. Targets: within 1.5x the floor on one worker, faster than
the floor with two.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time

from components import storage
from components.benchmark import bertja_argv, gib, mecab_floor_seconds, print_report, run_measured
from components.corpus.cirrussearch import corpus_documents, write_cirrussearch
from components.corpus.wiki import clean_page_text


def _cleaned_texts(dump_uri: str) -> list[str]:
    texts = []
    with storage.open_read(dump_uri) as f:
        for raw in f:
            item = json.loads(raw)
            if "index" not in item:
                texts.append(clean_page_text(item["text"], title=item["title"]))
    return texts


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def main(argv: list[str], prog: str = "bertja bench corpus-wiki") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="CirrusSearch dump (.json.gz)")
    parser.add_argument("--workers", type=int, default=2, help="the parallel run's worker count (2)")
    parser.add_argument("--mecab-dic", default="unidic_lite")
    parser.add_argument("--from-corpus", metavar="CORPUS",
                        help="first write INPUT as a CirrusSearch dump of this corpus file's documents")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each measurement; the fastest counts")
    args = parser.parse_args(argv)

    if args.from_corpus:
        write_cirrussearch(corpus_documents(args.from_corpus), args.input)
    texts = _cleaned_texts(args.input)
    floor, floor_cpu = float("inf"), float("inf")
    for _ in range(args.repeat):
        cpu = time.process_time()
        floor = min(floor, mecab_floor_seconds(texts, args.mecab_dic)[0])
        floor_cpu = min(floor_cpu, time.process_time() - cpu)
    rows: dict[str, object] = {
        "input": args.input, "input size": gib(storage.size(args.input)), "pages": len(texts),
        "cleaned characters": sum(map(len, texts)), "MeCab floor (s)": floor, "MeCab floor CPU (s)": floor_cpu,
    }
    digests = set()
    with tempfile.TemporaryDirectory(prefix="bench-corpus-wiki-") as tmp:
        for workers in sorted({1, args.workers}):
            out = os.path.join(tmp, f"corpus-{workers}.txt")
            argv_ = bertja_argv("corpus", "wiki", args.input, out, "--workers", str(workers),
                                "--mecab-dic", args.mecab_dic)
            runs = [run_measured(argv_) for _ in range(args.repeat)]
            best = min(runs, key=lambda r: r["wall_s"])
            rows[f"{workers} worker(s): wall (s)"] = best["wall_s"]
            rows[f"{workers} worker(s): peak RSS"] = gib(max(r["peak_rss_bytes"] for r in runs))
            rows[f"{workers} worker(s): wall / floor"] = best["wall_s"] / floor
            # CPU seconds of the whole process tree: steadier than wall time on a busy machine.
            rows[f"{workers} worker(s): CPU (s)"] = min(r["cpu_s"] for r in runs)
            rows[f"{workers} worker(s): CPU / floor CPU"] = min(r["cpu_s"] for r in runs) / floor_cpu
            digests.add(_digest(out))
    rows["outputs identical"] = "yes" if len(digests) == 1 else "NO"
    rows["target 1 worker <= 1.5x floor"] = "met" if rows["1 worker(s): wall / floor"] <= 1.5 else "missed"
    if args.workers > 1:
        met = rows[f"{args.workers} worker(s): wall / floor"] < 1.0
        rows[f"target {args.workers} workers < floor"] = "met" if met else "missed"
    print_report("corpus-wiki", rows)
    return 0

"""The bundled sample inputs parse with our own steps and are laid out as the pipeline expects."""

from __future__ import annotations

import csv
import re
import unicodedata
from pathlib import Path

from components import storage
from components.corpus.split import split_corpus
from components.corpus.wiki import build_wiki_corpus

SAMPLE = Path(__file__).parent.parent / "pipelines" / "sample_data"
DUMP = SAMPLE / "cirrussearch" / "20240101" / "jawiki-20240101-cirrussearch-content.json.gz"
CC100 = SAMPLE / "cc100" / "ja.txt.xz"
LEX = SAMPLE / "unidic" / "lex.csv"


def test_small_and_laid_out_as_dated_dump_folders():
    files = [p for p in SAMPLE.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 1_500_000
    for dated in (SAMPLE / "cirrussearch").iterdir():
        assert re.fullmatch(r"\d{8}", dated.name)
        assert [p.name for p in dated.iterdir()] == [f"jawiki-{dated.name}-cirrussearch-content.json.gz"]
    assert storage.exists("package://pipelines/sample_data/cc100/ja.txt.xz")


def test_wikipedia_dump_gives_a_corpus_and_its_noise_is_cleaned(tmp_path):
    out = tmp_path / "wiki.txt"
    stats = build_wiki_corpus(str(DUMP), str(out))
    text = out.read_text(encoding="utf-8")
    assert stats["pages"] == 315 and stats["pages_kept"] >= 290 and stats["sentences"] >= 5000
    assert stats["sentences_dropped_displaystyle"] > 0 and stats["sentences_dropped_short"] > 0
    for leftover in ("[1]", "[要出典]", "[要検証]", "{{lang-en|", "{{Main|", " > ", " ^ ", "\\displaystyle", "\u200b"):
        assert leftover not in text, leftover


def test_cc100_splits_into_shards(tmp_path):
    result = split_corpus([str(CC100)], str(tmp_path), num_files=4)
    assert result["lines"] == 3000 and result["documents"] >= 100
    assert all(n > 0 for n in result["documents_per_file"])


def test_lexicon_rows_cover_the_sample_text(tmp_path):
    with open(LEX, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) >= 3000
    assert all(len(r) == 30 and all(x.lstrip("-").isdigit() for x in r[1:4]) for r in rows)
    alphabet = {unicodedata.normalize("NFKC", c) for r in rows for c in r[0]}
    assert {chr(c) for c in range(0x3042, 0x3094)} <= alphabet  # hiragana
    assert set("ABCDEFGHIJKLMNOPQRSTUVWXYZ") <= alphabet
    build_wiki_corpus(str(DUMP), str(tmp_path / "wiki.txt"))
    corpus_chars = set((tmp_path / "wiki.txt").read_text(encoding="utf-8")) - {"\n"}
    assert len(corpus_chars & alphabet) / len(corpus_chars) > 0.9

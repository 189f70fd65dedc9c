"""The bundled sample inputs parse with our own steps and are laid out as the pipeline expects."""

from __future__ import annotations

import csv
import re
import unicodedata
from pathlib import Path

from components import storage
from components.corpus.aozora import build_aozora_corpus, work_documents
from components.corpus.cirrussearch import write_cirrussearch
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


# The builders of the sample and test data: Aozora Bunko markup is stripped, and
# only plainly public-domain works are used.

AOZORA_WORK = """こころ
夏目漱石

-------------------------------------------------------
【テキスト中に現れる記号について】

《》：ルビ
（例）私《わたくし》は
-------------------------------------------------------

［＃５字下げ］一［＃「一」は中見出し］

　私《わたくし》はその人を｜常《つね》に先生と呼んでいた。だからここでも※［＃「てへん＋劣」、第3水準1-84-77］と書く。
　私は［＃傍点］毎日［＃傍点終わり］海へはいりに出掛けた。

［＃５字下げ］二［＃「二」は中見出し］

　「先生は？」と聞き返さずにはいられなかった。これが始まりである。

底本：「こころ」岩波文庫
入力：誰か
"""


def _aozora_tree(root: Path, works: dict[str, str]) -> Path:
    for name, text in works.items():
        path = root / "cards" / "000148" / "files" / name / f"{name}.txt"
        path.parent.mkdir(parents=True)
        path.write_bytes(text.replace("\n", "\r\n").encode("cp932"))
    return root


def test_aozora_markup_header_and_colophon_are_stripped():
    docs = list(work_documents(AOZORA_WORK))
    assert docs == [["私はその人を常に先生と呼んでいた。", "私は毎日海へはいりに出掛けた。"],
                    ["「先生は？」と聞き返さずにはいられなかった。", "これが始まりである。"]]


def test_aozora_corpus_skips_translations(tmp_path):
    translated = AOZORA_WORK.replace("夏目漱石\n", "ある作家\n誰それ訳\n")
    root = _aozora_tree(tmp_path, {"1_ruby": AOZORA_WORK, "2_ruby": translated})
    stats = build_aozora_corpus(str(root), str(tmp_path / "out.txt"), sentences=10, authors=["000148"])
    assert (stats["works"], stats["works_skipped"], stats["documents"], stats["sentences"]) == (1, 1, 2, 4)
    assert (tmp_path / "out.txt").read_text(encoding="utf-8") == (
        "私はその人を常に先生と呼んでいた。\n私は毎日海へはいりに出掛けた。\n\n"
        "「先生は？」と聞き返さずにはいられなかった。\nこれが始まりである。\n\n")


def test_generated_dump_cleans_back_to_its_sentences(tmp_path):
    docs = [("夏目漱石", ["夏目漱石は日本の小説家である。", "代表作に『こころ』がある。"] * 20)]
    write_cirrussearch(docs, str(tmp_path / "d.json.gz"), seed=3)
    build_wiki_corpus(str(tmp_path / "d.json.gz"), str(tmp_path / "c.txt"))
    lines = (tmp_path / "c.txt").read_text(encoding="utf-8").split("\n")
    assert set(lines) - {""} == {"夏目漱石は日本の小説家である。", "代表作に『こころ』がある。"}
    assert len(lines) >= 30

"""Wikipedia corpus (SPEC 6.1): byte parity with the recipe, cleaning, filters, errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from components import storage
from components.corpus.wiki import SentenceSplitter, build_wiki_corpus
from components.errors import BadInput
from pipelines import cli

DATA = Path(__file__).parent / "data"
PARITY_INPUT = DATA / "wiki_parity.json.gz"
# Written by the recipe's make_corpus_wiki.py from PARITY_INPUT (see data/README.md).
EXPECTED = (DATA / "wiki_parity.expected.txt").read_bytes()


def _dump(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
    return path


def _page(title: str, text: str) -> str:
    return json.dumps({"title": title, "text": text, "namespace": 0}, ensure_ascii=False)


@pytest.mark.parametrize("workers", [1, 2])
def test_output_is_byte_identical_to_the_recipe_for_any_worker_count(tmp_path, workers):
    out = tmp_path / "corpus.txt"
    stats = build_wiki_corpus(str(PARITY_INPUT), str(out), workers=workers)
    assert out.read_bytes() == EXPECTED
    assert stats["pages"] == 75
    # Each kept page is closed by exactly one blank line.
    assert stats["pages_kept"] == EXPECTED.decode().count("\n\n")
    assert stats["sentences"] == len([x for x in EXPECTED.decode().split("\n") if x])


def test_gzip_output_when_the_name_ends_in_gz(tmp_path):
    out = tmp_path / "corpus.txt.gz"
    build_wiki_corpus(str(PARITY_INPUT), str(out))
    assert gzip.decompress(out.read_bytes()) == EXPECTED


def test_cleaning_rules_and_filters_as_a_reader_sees_them():
    text = EXPECTED.decode()
    lines = text.split("\n")
    for leftover in ("[1]", "[要出典]", "[要ページ番号]", "[どの?]", "[リンク切れ]", "{{Infobox", " ^ ",
                     "\\displaystyle", "プログラミング言語 >", "\t", "\u200b", "ＡＢＣ"):
        assert leftover not in text, leftover
    assert "夏目漱石は日本の小説家である。" in lines            # footnote mark removed
    assert "C++は汎用のプログラミング言語である。" in lines      # breadcrumb removed
    assert "ABCは全角の英字で書かれている。" in lines           # NFKC
    assert "これは中心が原点にある円である。" in lines           # its neighbour with TeX was dropped
    assert "二行目の文章がここにある。" in lines                 # tab removed, not replaced
    assert "Is it split here?" in lines and "Yes it is!" in lines  # ASCII ?! end sentences
    assert "この文は句点で終わらないまま途切れている" in lines     # text after the last period
    assert "複数の 空白が ある文章である。" in lines              # whitespace collapsed
    # "3.14" splits at the ASCII period after NFKC (UniDic tags it 句点), leaving short pieces.
    assert not any("3.14" in line for line in lines)
    assert "一二三四五六七八九。" in lines and "一二三四五六七八。" not in lines  # 10 kept, 9 dropped
    lengths = [len(line) for line in lines if line]
    assert min(lengths) >= 10 and max(lengths) == 200
    # Pages that keep nothing leave no blank line: never two blank lines in a row.
    assert not text.startswith("\n") and "\n\n\n" not in text


def test_length_limits_are_parameters(tmp_path):
    dump = _dump(tmp_path / "d.json.gz", ['{"index": {"_id": "1"}}',
                                          _page("短い記事", "短い。とても短い。" + "あ" * 250 + "。")])
    out = tmp_path / "c.txt"
    stats = build_wiki_corpus(str(dump), str(out), min_length=3, max_length=300)
    assert out.read_text(encoding="utf-8") == "短い。\nとても短い。\n" + "あ" * 250 + "。\n\n"
    assert stats["sentences"] == 3
    stats = build_wiki_corpus(str(dump), str(out))
    assert out.read_text(encoding="utf-8") == ""
    assert (stats["sentences_dropped_short"], stats["sentences_dropped_long"], stats["pages_kept"]) == (2, 1, 0)


@pytest.mark.parametrize("workers", [1, 2])
def test_invalid_json_names_file_and_line(tmp_path, workers):
    dump = _dump(tmp_path / "bad.json.gz", ['{"index": {"_id": "1"}}', _page("良い", "これは正しいページの本文である。"),
                                            '{"index": {"_id": "2"}}', '{"title": "壊れた", "text": "途中で'])
    with pytest.raises(BadInput, match=r"bad\.json\.gz:4: invalid JSON"):
        build_wiki_corpus(str(dump), str(tmp_path / "out.txt"), workers=workers)
    assert not (tmp_path / "out.txt").exists()  # nothing half-written


def test_page_without_text_names_the_line(tmp_path):
    dump = _dump(tmp_path / "d.json.gz", ['{"index": {}}', '{"title": "本文なし"}'])
    with pytest.raises(BadInput, match=r"d\.json\.gz:2: page has no string 'text'"):
        build_wiki_corpus(str(dump), str(tmp_path / "out.txt"))


def test_splitter_handles_text_that_is_not_cleaned():
    # A tab is not a space: the general token walk is used and still splits like the recipe.
    split = SentenceSplitter()
    assert split("前の文である。\t後の文である。") == ["前の文である。", "\t後の文である。"]
    assert split("円周率は3.14です。") == ["円周率は3.", "14です。"]
    assert split("") == []


def test_reads_and_writes_gcs(gcs, tmp_path):
    storage.copy(str(PARITY_INPUT), f"{gcs}/dumps/wiki.json.gz")
    stats = build_wiki_corpus(f"{gcs}/dumps/wiki.json.gz", f"{gcs}/corpus/wiki.txt.gz", workers=2)
    with storage.open_read(f"{gcs}/corpus/wiki.txt.gz") as f:
        assert f.read() == EXPECTED
    assert stats["pages"] == 75


def test_cli_prints_the_summary_and_reports_bad_input(tmp_path, capsys):
    out = tmp_path / "c.txt"
    assert cli.main(["corpus", "wiki", str(PARITY_INPUT), str(out), "--workers", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["pages"] == 75 and out.read_bytes() == EXPECTED
    assert cli.main(["corpus", "wiki", str(tmp_path / "missing.json.gz"), str(out)]) == 2
    assert "missing.json.gz: no such file" in capsys.readouterr().err

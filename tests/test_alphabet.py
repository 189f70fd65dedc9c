"""The UniDic alphabet: lex.csv surfaces -> sorted printable NFKC characters."""

from __future__ import annotations

import csv
import gzip
import io
import os
import unicodedata

import pytest

from components import storage
from components.errors import BadInput
from components.tokenizer.alphabet import build_alphabet, read_alphabet
from pipelines import cli

SAMPLE_LEX = os.path.join(os.path.dirname(__file__), "..", "pipelines", "sample_data", "unidic", "lex.csv")


def unidic_rows(surfaces: list[str]) -> list[list[str]]:
    """Rows in UniDic 2.1.2's lex.csv layout (surface, left/right ids, cost, 29 feature columns)."""
    rows = []
    for i, surface in enumerate(surfaces):
        features = ["名詞", "普通名詞", "一般", "*", "*", "*", surface, surface, surface,
                    surface, surface, surface, "漢", "*", "*", "*", "*", "*", "*", "体", surface,
                    surface, surface, surface, "*", "*", "0", "C2", "*"]
        rows.append([surface, "5139", "5139", str(4000 + i), *features])
    return rows


def write_lex(path, rows, *, raw_prefix: str = "") -> str:
    buf = io.StringIO()
    buf.write(raw_prefix)
    csv.writer(buf, lineterminator="\n").writerows(rows)
    with open(path, "w", encoding="utf-8") as f:
        f.write(buf.getvalue())
    return str(path)


def lines_of(path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return f.read().split("\n")[:-1]


def test_alphabet_is_the_printable_nfkc_characters_of_surfaces_in_code_point_order(tmp_path):
    surfaces = [
        "東京", "とうきょう", "トウキョウ",
        "ｶﾞ",        # half-width katakana: NFKC per character -> カ and the combining voicing mark
        "Ａ１",       # full-width Latin/digit -> A 1
        "1,000",     # a comma inside a quoted CSV field
        "ﬁ",         # ligature: NFKC gives two characters -> dropped
        "㍻",         # square era name: NFKC gives 平成 -> dropped
        "\u3000",    # ideographic space -> ASCII space, which is printable and kept
        "a\u200bb",  # zero-width space is not printable -> dropped
        "東",        # repeats are counted once
    ]
    lex = write_lex(tmp_path / "lex.csv", unidic_rows(surfaces))
    out = tmp_path / "alphabet.txt"

    stats = build_alphabet(lex, str(out))

    expected = sorted({"東", "京", "と", "う", "き", "ょ", "ト", "ウ", "キ", "ョ", "カ", "\u3099",
                       "A", "1", ",", "0", " ", "a", "b"})
    assert lines_of(out) == expected
    assert lines_of(out)[0] == " "  # as in UniDic 2.1.2: the ASCII space comes first
    assert stats == {"characters": len(expected), "rows": len(surfaces)}
    assert read_alphabet(str(out)) == expected


def test_row_with_empty_surface_counts_as_double_quote(tmp_path):
    # UniDic's row for the double quote reads back with an empty first column.
    rows = unidic_rows(["あ"]) + [["", "5968", "5968", "1000", "補助記号"]]
    lex = write_lex(tmp_path / "lex.csv", rows)
    out = tmp_path / "alphabet.txt"
    build_alphabet(lex, str(out))
    assert lines_of(out) == ['"', "あ"]


def test_compressed_input_and_gcs_output(tmp_path, gcs):
    rows = unidic_rows(["日本語", "テキスト"])
    lex = tmp_path / "lex.csv.gz"
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    lex.write_bytes(gzip.compress(buf.getvalue().encode()))
    out = f"{gcs}/alphabet/unidic_lite.txt"

    stats = build_alphabet(str(lex), out)

    assert storage.read_text(out) == "".join(c + "\n" for c in sorted("日本語テキスト"))
    assert stats["characters"] == 7


@pytest.mark.parametrize("content, where", [
    ("", "lex.csv: no lexicon rows"),
    (',1,1,100,x\n,2,2,200,y\n', "lex.csv: no surface forms"),
    ("あ,1,1,100,名詞\nこれは普通の文です。\n", "lex.csv:2: not a MeCab/UniDic lexicon row"),
    ("あ,1,1,cost,名詞\n", "lex.csv:1: not a MeCab/UniDic lexicon row"),
])
def test_files_without_surfaces_or_not_a_lexicon_name_the_file_and_line(tmp_path, content, where):
    lex = tmp_path / "lex.csv"
    lex.write_text(content, encoding="utf-8")
    out = tmp_path / "alphabet.txt"
    with pytest.raises(BadInput, match=where.replace(".", r"\.")):
        build_alphabet(str(lex), str(out))
    assert not out.exists()


def test_invalid_utf8_names_the_line(tmp_path):
    lex = tmp_path / "lex.csv"
    lex.write_bytes("あ,1,1,100,名詞\n".encode() + b"\xff\xfe,1,1,100,x\n")
    with pytest.raises(BadInput, match=r"lex\.csv:2: invalid UTF-8"):
        build_alphabet(str(lex), str(tmp_path / "a.txt"))


def test_cli_writes_the_alphabet_and_reports_bad_input(tmp_path, capsys):
    lex = write_lex(tmp_path / "lex.csv", unidic_rows(["語彙", "辞書"]))
    out = tmp_path / "unidic_lite.txt"
    assert cli.main(["alphabet", lex, str(out)]) == 0
    assert '"characters": 4' in capsys.readouterr().out
    assert lines_of(out) == sorted("語彙辞書")

    (tmp_path / "empty.csv").write_text("")
    assert cli.main(["alphabet", str(tmp_path / "empty.csv"), str(tmp_path / "x.txt")]) == 2
    assert "empty.csv: no lexicon rows" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.exists(SAMPLE_LEX), reason="bundled sample lex.csv not committed yet")
def test_bundled_sample_lexicon(tmp_path):
    out = tmp_path / "alphabet.txt"
    stats = build_alphabet(SAMPLE_LEX, str(out))
    chars = lines_of(out)
    assert stats["characters"] == len(chars) > 0
    assert chars == sorted(set(chars))
    assert all(len(c) == 1 and c.isprintable() for c in chars)
    with open(SAMPLE_LEX, encoding="utf-8", newline="") as f:
        surfaces = "".join(row[0] or '"' for row in csv.reader(f) if row)
    assert set(chars) == {n for n in (unicodedata.normalize("NFKC", c) for c in surfaces)
                          if len(n) == 1 and n.isprintable()}

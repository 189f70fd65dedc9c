"""Merge/split (SPEC 6.2): whole documents into N shards, with the recipe's two bugs fixed."""

from __future__ import annotations

import collections
import gzip
import lzma
from pathlib import Path

import pytest

from components import storage
from components.corpus.split import split_corpus
from components.errors import BadInput

JA = Path(__file__).parent / "data" / "ja_sentences.txt"


def documents(text: str) -> list[tuple[str, ...]]:
    """Documents as tuples of whitespace-normalised lines."""
    return [tuple(" ".join(line.split()) for line in block.split("\n"))
            for block in text.split("\n\n") if block.strip()]


def shard_texts(result: dict) -> list[str]:
    return [storage.read_text(uri) for uri in result["files"]]


@pytest.mark.parametrize("num_files", [1, 2, 3, 8])
def test_every_document_lands_whole_in_exactly_one_shard(tmp_path, num_files):
    result = split_corpus([str(JA)], str(tmp_path), num_files=num_files)
    assert [Path(f).name for f in result["files"]] == [f"corpus_{i:02d}.txt" for i in range(1, num_files + 1)]
    texts = shard_texts(result)
    got = collections.Counter(d for t in texts for d in documents(t))
    assert got == collections.Counter(documents(JA.read_text(encoding="utf-8")))
    assert all(t == "" or t.endswith("\n\n") for t in texts)
    assert result["documents"] == 351 and result["lines"] == 15000
    assert result["documents_per_file"] == [len(documents(t)) for t in texts]
    if num_files > 1:
        assert sum(1 for n in result["documents_per_file"] if n) == num_files  # all shards used


def test_same_seed_same_shards_other_seed_other_shards(tmp_path):
    a = shard_texts(split_corpus([str(JA)], str(tmp_path / "a"), num_files=4, seed=7))
    b = shard_texts(split_corpus([str(JA)], str(tmp_path / "b"), num_files=4, seed=7))
    c = shard_texts(split_corpus([str(JA)], str(tmp_path / "c"), num_files=4, seed=8))
    assert a == b and a != c


def test_an_input_without_final_blank_line_does_not_run_into_the_next(tmp_path):
    first = tmp_path / "a.txt"
    first.write_text("一つ目の文書の一文目。\n一つ目の文書の二文目。", encoding="utf-8")  # no blank line at the end
    second = tmp_path / "b.txt"
    second.write_text("二つ目の文書の一文目。\n\n\n\n三つ目の文書の一文目。\n", encoding="utf-8")
    result = split_corpus([str(first), str(second)], str(tmp_path / "out"), num_files=1)
    assert documents(shard_texts(result)[0]) == [
        ("一つ目の文書の一文目。", "一つ目の文書の二文目。"), ("二つ目の文書の一文目。",), ("三つ目の文書の一文目。",)]
    assert "\n\n\n" not in shard_texts(result)[0]  # runs of blank lines make no empty documents


def test_lines_are_whitespace_normalised_and_compressed_inputs_read(tmp_path):
    gz = tmp_path / "a.txt.gz"
    gz.write_bytes(gzip.compress("  吾輩は\u3000猫\tである。  \n\n".encode()))
    xz = tmp_path / "b.txt.xz"
    xz.write_bytes(lzma.compress("名前は   まだ無い。\n".encode()))
    result = split_corpus([str(gz), str(xz)], str(tmp_path / "out"), num_files=1)
    assert shard_texts(result) == ["吾輩は 猫 である。\n\n名前は まだ無い。\n\n"]


def test_reads_and_writes_gcs(gcs, tmp_path):
    storage.copy(str(JA), f"{gcs}/in/ja.txt")
    result = split_corpus([f"{gcs}/in/ja.txt"], f"{gcs}/shards", num_files=3)
    assert result["files"] == [f"{gcs}/shards/corpus_0{i}.txt" for i in (1, 2, 3)]
    assert sum(len(documents(t)) for t in shard_texts(result)) == 351


def test_bad_parameters_and_inputs(tmp_path):
    with pytest.raises(BadInput, match="num_files=0"):
        split_corpus([str(JA)], str(tmp_path), num_files=0)
    bad = tmp_path / "bad.txt"
    bad.write_bytes("正しい行。\n".encode() + b"\xff\xfe\n")
    with pytest.raises(BadInput, match=r"bad\.txt:2: invalid UTF-8"):
        split_corpus([str(bad)], str(tmp_path / "out"), num_files=2)
    assert not (tmp_path / "out" / "corpus_01.txt").exists()  # no shard half-written


def test_a_rerun_with_fewer_shards_leaves_exactly_its_own(tmp_path):
    """Shards an earlier run wrote beyond this run's go; files not named like shards stay."""
    out = tmp_path / "shards"
    out.mkdir()
    for name in ("notes.txt", "corpus_final.txt", "corpus_1.txt"):
        (out / name).write_text("mine")
    assert len(split_corpus([str(JA)], str(out), num_files=12)["files"]) == 12
    split_corpus([str(JA)], str(out), num_files=3)
    assert sorted(p.name for p in out.iterdir()) == [
        "corpus_01.txt", "corpus_02.txt", "corpus_03.txt", "corpus_1.txt", "corpus_final.txt", "notes.txt"]


def test_a_rerun_on_gcs_leaves_exactly_its_own(gcs):
    storage.copy(str(JA), f"{gcs}/rerun/ja.txt")
    split_corpus([f"{gcs}/rerun/ja.txt"], f"{gcs}/rerun/shards", num_files=4)
    storage.write_text(f"{gcs}/rerun/shards/sub/corpus_09.txt", "not directly in the folder")
    split_corpus([f"{gcs}/rerun/ja.txt"], f"{gcs}/rerun/shards", num_files=2)
    assert storage.list_files(f"{gcs}/rerun/shards") == [
        f"{gcs}/rerun/shards/corpus_01.txt", f"{gcs}/rerun/shards/corpus_02.txt",
        f"{gcs}/rerun/shards/sub/corpus_09.txt"]

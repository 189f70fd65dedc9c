"""Tokenizer-training sample: K random non-empty lines, deterministic, streaming."""

from __future__ import annotations

import collections
import gzip
from pathlib import Path

import pytest

from components import storage
from components.corpus.sample import sample_lines
from components.errors import BadInput

JA = Path(__file__).parent / "data" / "ja_sentences.txt"
LINES = [line for line in JA.read_text(encoding="utf-8").split("\n") if line.strip()]


def test_k_distinct_lines_of_the_input_spread_over_all_of_it(tmp_path):
    out = tmp_path / "sample.txt"
    stats = sample_lines([str(JA)], str(out), lines=2000, seed=0)
    got = out.read_text(encoding="utf-8").splitlines()
    assert stats == {"lines": 2000, "lines_available": 15000, "seconds": stats["seconds"]}
    assert len(got) == 2000 and "" not in got
    position = {line: i for i, line in enumerate(LINES)}
    assert all(line in position for line in got)
    picked = collections.Counter(position[line] * 4 // len(LINES) for line in got)
    assert all(350 <= picked[q] <= 650 for q in range(4)), picked  # each quarter ~500


def test_deterministic_for_a_seed(tmp_path):
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        sample_lines([str(JA)], str(tmp_path / name), lines=100, seed=seed)
        runs[name] = (tmp_path / name).read_text(encoding="utf-8")
    assert runs["a"] == runs["b"] != runs["c"]


def test_asking_for_more_lines_than_there_are_gives_all(tmp_path):
    src = tmp_path / "small.txt.gz"
    src.write_bytes(gzip.compress("一行目。\n\n  \n二行目。\n三行目。\n".encode()))
    stats = sample_lines([str(src)], str(tmp_path / "s.txt"), lines=10)
    assert (tmp_path / "s.txt").read_text(encoding="utf-8") == "一行目。\n二行目。\n三行目。\n"
    assert stats["lines"] == stats["lines_available"] == 3


def test_several_inputs_and_gcs(gcs):
    storage.copy(str(JA), f"{gcs}/a.txt")
    storage.write_text(f"{gcs}/b.txt", "追加の入力の一行である。\n")
    stats = sample_lines([f"{gcs}/a.txt", f"{gcs}/b.txt"], f"{gcs}/sample.txt", lines=15001)
    assert stats["lines"] == 15001
    assert storage.read_text(f"{gcs}/sample.txt").endswith("追加の入力の一行である。\n")


def test_bad_parameters(tmp_path):
    with pytest.raises(BadInput, match="lines=0"):
        sample_lines([str(JA)], str(tmp_path / "s.txt"), lines=0)
    with pytest.raises(BadInput, match="no such file"):
        sample_lines([str(tmp_path / "missing.txt")], str(tmp_path / "s.txt"), lines=5)

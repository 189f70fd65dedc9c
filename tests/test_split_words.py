"""Word-split shards (``bertja split-words``): MeCab once per shard, the same output downstream.

The data step from a shard's words must write the same bytes as from its text
(WordPiece and character, cased and lowercased, each MeCab dictionary), token
shards too, and tokenizer training on the words must learn the same vocabulary.
"""

import gzip
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from kfp import compiler, dsl

from components.errors import BadInput
from components.mecab import WordSplitter
from components.pretraining_data.create import create_pretraining_data
from components.pretraining_data.shards import write_token_shards
from components.tokenizer import files
from components.tokenizer.byte import write_byte_tokenizer
from components.tokenizer.wordpiece import train_wordpiece
from components.words.split import NO_WORDS, WORDS_SUFFIX, meta_uri, split_words

CORPUS = Path(__file__).parent / "data" / "ja_sentences.txt"
# Lines that take the unusual paths: full-width and upper-case Latin (NFKC, lowercasing),
# control and zero-width characters (MeCab nodes, not its one-line output), tabs inside,
# CRLF, spaces only (blank: a document end), a long unknown run, an unknown character.
ODD_LINES = ["ＡＢＣ１２３ Half-Width ｶﾀｶﾅ と GPU の CUDA 12.1", "タブ\tを含む\x0b行\x1cです。", "ゼロ幅\u200b空白",
             "  ", "改行は\r", "x" * 120, "未知の字𠮷を含む文。", "İstanbul ǅ ß ﬁ", "\u3000全角空白で始まる"]


def _corpus(tmp_path: Path, documents: int = 60) -> str:
    lines = CORPUS.read_text(encoding="utf-8").splitlines(keepends=True)
    blank = [i for i, line in enumerate(lines) if not line.strip()]
    text = "".join(lines[:blank[documents] + 1]) + "\n".join(ODD_LINES) + "\n\n" + "".join(lines[:40])
    path = tmp_path / "shard.txt"
    path.write_bytes(text.encode("utf-8"))
    return str(path)


def _vocab(path: Path, corpus: str, subword: str, mecab_dic: str, lower: bool) -> str:
    split = WordSplitter(mecab_dic, lower)
    counts: dict[str, int] = {}
    chars: set[str] = set()
    for line in Path(corpus).read_text(encoding="utf-8").splitlines():
        for word in split(line.strip()) if line.strip() else []:
            counts[word] = counts.get(word, 0) + 1
            chars.update(word)
    alphabet = sorted(chars - {"𠮷"})  # one character left unknown
    tokens = files.reserved_tokens() + alphabet
    if subword == "wordpiece":
        frequent = sorted((w for w, n in counts.items() if n >= 3 and len(w) > 1), key=lambda w: (-counts[w], w))
        tokens += [files.CONTINUATION_PREFIX + c for c in alphabet] + frequent[:3000]
    files.write_tokenizer_dir(str(path), tokens, subword_tokenizer_type=subword, do_lower_case=lower,
                              mecab_dic=mecab_dic)
    return str(path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    return _corpus(tmp_path_factory.mktemp("corpus"))


def _read_lines(path: str) -> list[str]:
    with gzip.open(path, "rb") as f:
        return f.read().decode("utf-8").split("\n")[:-1]  # split at "\n" only, like the readers


def test_one_line_per_input_line_with_the_words_mecab_gives(corpus, tmp_path):
    meta = split_words(corpus, str(tmp_path / "w.words.gz"))
    text = Path(corpus).read_bytes().decode("utf-8").split("\n")[:-1]
    out = _read_lines(str(tmp_path / "w.words.gz"))
    assert len(out) == len(text) == meta["lines"]
    split = WordSplitter("unidic_lite", False)
    for source, line in zip(text, out):
        if not source.strip():
            assert line == ""
        else:
            assert line.split(" ") == split(source.strip()) and line != NO_WORDS
    assert sum(len(line.split(" ")) for line in out if line) == meta["words"]
    assert json.loads(Path(meta_uri(str(tmp_path / "w.words.gz"))).read_text())["mecab_dic"] == "unidic_lite"
    # Not lowercased: one file serves cased and lowercased variants.
    assert any("GPU" in line for line in out)


def test_same_bytes_whatever_the_workers(corpus, tmp_path):
    split_words(corpus, str(tmp_path / "1.words.gz"), workers=1)
    split_words(corpus, str(tmp_path / "2.words.gz"), workers=2)
    assert (tmp_path / "1.words.gz").read_bytes() == (tmp_path / "2.words.gz").read_bytes()


@pytest.mark.parametrize("subword,mecab_dic,lower", [
    ("wordpiece", "unidic_lite", False), ("wordpiece", "unidic_lite", True), ("character", "unidic_lite", False),
    ("wordpiece", "ipadic", True), ("character", "ipadic", False)])
def test_pretraining_data_from_words_is_byte_identical_to_from_text(corpus, tmp_path, subword, mecab_dic, lower):
    vocab = _vocab(tmp_path / "vocab", corpus, subword, mecab_dic, lower)
    words = str(tmp_path / "shard.words.gz")
    split_words(corpus, words, mecab_dic=mecab_dic, workers=2)
    common = dict(dupe_factor=2, max_seq_length=64, max_predictions=10)
    from_text = create_pretraining_data(corpus, str(tmp_path / "t.tfrecord.gz"), vocab, workers=1, **common)
    from_words = create_pretraining_data(words, str(tmp_path / "w.tfrecord.gz"), vocab, workers=2, words=True,
                                         **common)
    assert (tmp_path / "t.tfrecord.gz").read_bytes() == (tmp_path / "w.tfrecord.gz").read_bytes()
    same = ("instances", "tokens", "masked_tokens", "sentences", "documents", "input_lines", "lines_without_tokens")
    assert {k: from_text[k] for k in same} == {k: from_words[k] for k in same} and from_text["instances"] > 100
    assert from_words["input_words"] and not from_text["input_words"]
    # Token shards (the PyTorch trainer's input) too.
    write_token_shards(corpus, str(tmp_path / "ts_text"), vocab)
    write_token_shards(words, str(tmp_path / "ts_words"), vocab, words=True)
    for name in ("tokens", "word_starts", "sentence_ends", "document_ends"):
        assert (tmp_path / "ts_text" / f"{name}.npy").read_bytes() == (tmp_path / "ts_words" / f"{name}.npy").read_bytes()


def test_tokenizer_training_on_words_learns_the_same_vocabulary(corpus, tmp_path):
    words = str(tmp_path / "shard.words.gz")
    split_words(corpus, words)
    a = train_wordpiece([corpus], str(tmp_path / "text"), vocab_size=3000, limit_alphabet=None, do_lower_case=True)
    b = train_wordpiece([words], str(tmp_path / "words"), vocab_size=3000, limit_alphabet=None, do_lower_case=True,
                        words=True, workers=2)
    assert a["words"] == b["words"] and a["lines"] == b["lines"]
    for name in os.listdir(tmp_path / "text"):
        assert (tmp_path / "text" / name).read_bytes() == (tmp_path / "words" / name).read_bytes(), name


def test_words_that_do_not_fit_the_tokenizer_are_refused(corpus, tmp_path):
    words = str(tmp_path / "shard.words.gz")
    split_words(corpus, words, mecab_dic="ipadic")
    vocab = _vocab(tmp_path / "vocab", corpus, "character", "unidic_lite", False)
    with pytest.raises(BadInput, match="split with mecab 'ipadic'; the tokenizer splits with mecab 'unidic_lite'"):
        create_pretraining_data(words, str(tmp_path / "o.tfrecord.gz"), vocab, words=True)
    byte_dir = str(tmp_path / "byte")
    write_byte_tokenizer(byte_dir, mecab_dic="ipadic")
    with pytest.raises(BadInput, match="needs a wordpiece or character tokenizer"):
        create_pretraining_data(words, str(tmp_path / "o.tfrecord.gz"), byte_dir, words=True)
    with pytest.raises(BadInput, match="no shard.txt.meta.json beside it"):  # the text itself, not words
        create_pretraining_data(corpus, str(tmp_path / "o.tfrecord.gz"), vocab, words=True)
    # A words file cut short (or swapped) disagrees with its meta's line count.
    vocab_ipa = _vocab(tmp_path / "vocab_ipa", corpus, "character", "ipadic", False)
    lines = _read_lines(words)
    with gzip.open(words, "wb") as f:
        f.write(("\n".join(lines[:-5]) + "\n").encode())
    with pytest.raises(BadInput, match=r"lines, its shard.words.gz.meta.json says \d+"):
        create_pretraining_data(words, str(tmp_path / "o.tfrecord.gz"), vocab_ipa, words=True)
    assert not list(tmp_path.glob("o.*"))


def test_bad_input_is_named(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes("一行目\n".encode() + b"\xff\xfe\n")
    with pytest.raises(BadInput, match=r"bad.txt:2: invalid UTF-8"):
        split_words(str(bad), str(tmp_path / "o.words.gz"), workers=2)
    with pytest.raises(BadInput, match="must end with .gz"):
        split_words(str(bad), str(tmp_path / "o.words"))
    with pytest.raises(BadInput, match="needs a MeCab dictionary"):
        split_words(str(bad), str(tmp_path / "o.words.gz"), mecab_dic="none")
    assert not list(tmp_path.glob("o.*"))


def test_cli(corpus, tmp_path, capsys):
    from pipelines.cli import main

    out = str(tmp_path / "c.words.gz")
    assert main(["split-words", corpus, out, "--workers", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["output"] == out
    vocab = _vocab(tmp_path / "vocab", corpus, "wordpiece", "unidic_lite", False)
    assert main(["pretraining-data", out, str(tmp_path / "p.tfrecord.gz"), "--words", "--vocab-dir", vocab,
                 "--dupe-factor", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["input_words"] is True


class _Metrics(SimpleNamespace):
    def log_metric(self, key, value):
        self.metadata[key] = value


def test_component_mirrors_the_shards_manifest(corpus, tmp_path):
    from components import artifacts
    from components.words.component import split_words as component

    shards = tmp_path / "shards"
    (shards / "sub").mkdir(parents=True)
    for name in ("a.txt", "sub/b.txt"):
        (shards / name).write_bytes(Path(corpus).read_bytes())
    artifacts.write_manifest(str(shards), {"files": ["a.txt", "sub/b.txt"], "train": ["a.txt"],
                                           "heldout": ["sub/b.txt"]})
    words = SimpleNamespace(uri=str(tmp_path / "words"), path=str(tmp_path / "words"), metadata={})
    stats = _Metrics(path=str(tmp_path / "stats"), metadata={})
    component.python_func(shards=SimpleNamespace(uri=str(shards), path=str(shards)), mecab_dic="unidic_lite",
                          words=words, stats=stats)
    manifest = artifacts.read_manifest(words.path)
    assert manifest["train"] == ["a.txt" + WORDS_SUFFIX] and manifest["heldout"] == ["sub/b.txt" + WORDS_SUFFIX]
    assert (tmp_path / "words" / "a.txt.words.gz").read_bytes() == (tmp_path / "words" / "sub/b.txt.words.gz").read_bytes()
    assert stats.metadata["shards"] == 2 and words.metadata["words"] == stats.metadata["words"] > 0


def test_compiled_pipeline_takes_words_as_an_optional_input(tmp_path):
    from components.pretraining_data.component import pretraining_data
    from components.words.component import split_words as component

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def inputs(shards: dsl.Output[dsl.Dataset], tokenizer: dsl.Output[dsl.Model]):
        """Stand-ins for the shards and tokenizer artifacts."""

    @dsl.pipeline(name="words")
    def pipe():
        made = inputs()
        words = component(shards=made.outputs["shards"], mecab_dic="unidic_lite")
        pretraining_data(shards=made.outputs["shards"], shard="a.txt", tokenizer=made.outputs["tokenizer"],
                         max_seq_length=128, max_predictions=19, dupe_factor=1, masked_lm_prob=0.15,
                         short_seq_prob=0.1, base_seed=1, words=words.outputs["words"])

    path = tmp_path / "p.yaml"
    compiler.Compiler().compile(pipe, str(path))
    spec = yaml.safe_load(path.read_text())
    assert spec["components"]["comp-pretraining-data"]["inputDefinitions"]["artifacts"]["words"]["isOptional"]
    task = spec["root"]["dag"]["tasks"]["pretraining-data"]["inputs"]["artifacts"]["words"]
    assert task["taskOutputArtifact"] == {"outputArtifactKey": "words", "producerTask": "split-words"}

"""Tokenized shards for the PyTorch trainer: written once, read back to the tokenizer's own tokens."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_pretraining_data import build_vocab_dir
from test_pretraining_objectives import documents, small_corpus

from components import storage
from components.errors import BadInput
from components.mecab import WordSplitter
from components.pretraining_data.shards import read_token_shards, write_token_shards
from components.tokenizer import files
from components.tokenizer.byte import write_byte_tokenizer
from components.tokenizer.sentencepiece import train_sentencepiece
from pipelines import cli

CORPUS_DOCS = 40


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tokenizers")
    corpus = small_corpus(root / "corpus.txt")
    out = {"wordpiece": build_vocab_dir(root / "wordpiece", "wordpiece"), "corpus": corpus}
    out["sentencepiece"] = str(root / "sp")
    train_sentencepiece([corpus], out["sentencepiece"], vocab_size=2500, byte_fallback=True,
                        character_coverage=0.995)
    out["byte"] = str(root / "byte")
    write_byte_tokenizer(out["byte"], mecab_dic="unidic_lite")
    return out


@pytest.mark.parametrize("kind", ["wordpiece", "sentencepiece", "byte"])
def test_shards_read_back_to_the_auto_tokenizer_tokens(dirs, kind, tmp_path):
    from transformers import AutoTokenizer

    out = str(tmp_path / "tokens")
    meta = write_token_shards(dirs["corpus"], out, dirs[kind], workers=2)
    shards = read_token_shards(out)
    assert shards.meta == meta and shards.tokenizer_type == kind
    assert shards.tokens.dtype == np.uint16 and isinstance(shards.tokens, np.memmap)
    hf = AutoTokenizer.from_pretrained(dirs[kind])
    source = documents(CORPUS_DOCS)
    assert len(shards) == len(source) == meta["documents"]
    for i, doc in enumerate(source):
        expected = [hf(s, add_special_tokens=False)["input_ids"] for s in doc]
        assert [s.tolist() for s in shards.sentences(i)] == expected
        ids, starts = shards.document(i)
        assert ids.tolist() == [t for s in expected for t in s] and len(starts) == len(ids)
        if kind == "wordpiece":  # a word starts where the token is not a ## continuation
            tokens = hf.convert_ids_to_tokens(ids.tolist())
            assert starts.tolist() == [not t.startswith("##") for t in tokens]
        elif kind == "sentencepiece":
            assert starts.all()  # no word splitter: every token its own group
        else:  # bytes grouped into MeCab words
            words = WordSplitter("unidic_lite")
            groups = np.split(ids, np.nonzero(starts)[0][1:])
            text = [bytes(int(b) - 5 for b in g).decode("utf-8") for g in groups]
            # whitespace is a group of its own (MeCab's wakati output drops it)
            assert [t for t in text if not t.isspace()] == [n.surface for s in doc for n in words._tagger(s)
                                                           if not n.surface.isspace()]
    assert meta["tokenizer"]["special_token_ids"] == files.SPECIAL_TOKEN_IDS
    assert meta["tokenizer"]["word_splitter"] == ("none" if kind == "sentencepiece" else "mecab")
    # Compact: 2 bytes a token plus a bit for its word start.
    assert storage.size(f"{out}/tokens.npy") < 2 * meta["tokens"] + 200
    assert storage.size(f"{out}/word_starts.npy") < meta["tokens"] / 8 + 200


def test_vocabularies_of_65536_tokens_or_more_take_32_bits(dirs, tmp_path):
    tokens = list(files.load_vocab(dirs["wordpiece"]).tokens)
    big = str(tmp_path / "big")
    files.write_tokenizer_dir(big, tokens + [f"[extra{i}]" for i in range(70_000 - len(tokens))],
                              subword_tokenizer_type="wordpiece")
    small = read_token_shards(_written(dirs["corpus"], str(tmp_path / "s"), dirs["wordpiece"]))
    large = read_token_shards(_written(dirs["corpus"], str(tmp_path / "l"), big))
    assert small.tokens.dtype == np.uint16 and large.tokens.dtype == np.uint32
    assert (small.tokens == large.tokens).all() and (small.word_starts == large.word_starts).all()


def _written(corpus: str, out: str, vocab: str) -> str:
    write_token_shards(corpus, out, vocab)
    return out


def test_gcs_round_trip(gcs, dirs, tmp_path):
    out = f"{gcs}/shards/tokens"
    meta = write_token_shards(dirs["corpus"], out, dirs["byte"])
    back = read_token_shards(out)
    local = read_token_shards(_written(dirs["corpus"], str(tmp_path / "t"), dirs["byte"]))
    assert back.meta["tokens"] == meta["tokens"] and (back.tokens == local.tokens).all()
    assert (back.word_starts == local.word_starts).all()


def test_incomplete_or_foreign_directories_are_bad_input(dirs, tmp_path):
    out = tmp_path / "tokens"
    write_token_shards(dirs["corpus"], str(out), dirs["byte"])
    (out / "meta.json").unlink()
    with pytest.raises(BadInput, match="no meta.json"):
        read_token_shards(str(out))
    write_token_shards(dirs["corpus"], str(out), dirs["byte"])
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps({**meta, "tokens": meta["tokens"] + 1}))
    with pytest.raises(BadInput, match="tokens.npy holds"):
        read_token_shards(str(out))
    (out / "meta.json").write_text(json.dumps({**meta, "version": 9}))
    with pytest.raises(BadInput, match="version 9"):
        read_token_shards(str(out))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(BadInput, match="no sentences with tokens"):
        write_token_shards(str(empty), str(tmp_path / "e"), dirs["byte"])


def test_cli_format_shards(dirs, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli.main(["pretraining-data", dirs["corpus"], str(out), "--vocab-dir", dirs["sentencepiece"],
                     "--format", "shards", "--workers", "2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["format"] == "bertja-token-shards" and printed["documents"] == CORPUS_DOCS
    assert read_token_shards(str(out)).meta == {k: v for k, v in printed.items() if k != "output"}

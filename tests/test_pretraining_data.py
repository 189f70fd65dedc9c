"""Pretraining data on real Japanese text: format, content, statistics, determinism, bad input.

The corpus is tests/data/ja_sentences.txt (15k Aozora Bunko sentences). The vocab
dirs are built here deterministically: every character seen twice, its ``##``
form, and the words seen three times (a real WordPiece vocabulary: frequent
words whole, the rest in pieces, rare characters [UNK]).

REFERENCE holds what the recipe's own script gives on the same corpus and vocab
dirs (mean of 5 seeds). Provenance: cl-tohoku/bert-japanese
``create_pretraining_data.py`` + ``tokenization.py`` run with this .venv as
``--word_tokenizer_type=mecab --mecab_dic_type=unidic_lite --do_whole_word_mask
--gzip_compress --use_v2_feature_names --max_seq_length=128
--max_predictions_per_seq=19 --dupe_factor=5 --nodo_lower_case
--random_seed={12345,1,2,3,4}`` (character: ``--subword_tokenizer_type=character
--vocab_has_no_subword_prefix``), vocab dirs from ``build_vocab_dir`` below, and
its output read back with TensorFlow.
"""

from __future__ import annotations

import collections
import gzip
import itertools
import json
import os
import unicodedata
import zlib
from pathlib import Path

import numpy as np
import pytest

from components import storage
from components.errors import BadInput
from components.mecab import WordSplitter
from components.pretraining_data.create import create_pretraining_data, shard_seed, summary_uri
from components.tokenizer import files

CORPUS = Path(__file__).parent / "data" / "ja_sentences.txt"
SEQ, PRED = 128, 19

# instances, mean tokens, mean masked tokens, random-next rate (see module docstring).
# Across the 5 seeds the reference's own spread (std) is ~1.2% of instances,
# ~0.8% of the means and ~0.9 points of random-next rate.
REFERENCE = {
    "wordpiece": (20811.4, 113.310, 16.850, 0.5479),
    "character": (26245.2, 117.862, 17.521, 0.5545),
}


def build_vocab_dir(path: Path, subword: str, corpus: Path = CORPUS) -> str:
    ws = WordSplitter("unidic_lite", False)
    words: collections.Counter = collections.Counter()
    chars: collections.Counter = collections.Counter()
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                for word in ws(line.strip()):
                    words[word] += 1
                    chars.update(word)
    alphabet = sorted(c for c, n in chars.items() if n >= 2)
    tokens = files.reserved_tokens() + alphabet
    if subword == "wordpiece":
        frequent = sorted((w for w, n in words.items() if n >= 3 and len(w) > 1), key=lambda w: (-words[w], w))
        tokens += [files.CONTINUATION_PREFIX + c for c in alphabet] + frequent[:6000]
    files.write_tokenizer_dir(str(path), tokens, subword_tokenizer_type=subword)
    return str(path)


@pytest.fixture(scope="module")
def vocab_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocab")
    return {kind: build_vocab_dir(root / kind, kind) for kind in ("wordpiece", "character")}


@pytest.fixture(scope="module")
def made(vocab_dirs, tmp_path_factory):
    """The whole corpus through the step, once per vocab kind (seq 128, dupe 5)."""
    out = tmp_path_factory.mktemp("made")
    result = {}
    for kind, vocab in vocab_dirs.items():
        output = str(out / f"{kind}.tfrecord.gz")
        summary = create_pretraining_data(str(CORPUS), output, vocab, workers=2)
        result[kind] = (output, summary)
    return result


def read_records(path: str, seq: int = SEQ, pred: int = PRED) -> dict[str, np.ndarray]:
    """Parses a GZIP TFRecord file with TensorFlow and Model Garden's own feature spec."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    from official.nlp.data import pretrain_dataloader

    config = pretrain_dataloader.BertPretrainDataConfig(
        input_path=path, seq_length=seq, max_predictions_per_seq=pred, use_v2_feature_names=True,
        file_type="tfrecord_compressed", global_batch_size=1, is_training=False)
    spec = pretrain_dataloader.BertPretrainDataLoader(config)._name_to_features()
    dataset = tf.data.TFRecordDataset(path, compression_type="GZIP").batch(8192)
    batches = [tf.io.parse_example(records, spec) for records in dataset]
    return {name: np.concatenate([b[name].numpy() for b in batches]) for name in spec}


def hf_document_ids(vocab_dir: str) -> list[list[int]]:
    """The corpus's documents as token ids, tokenized by transformers itself."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(vocab_dir)
    docs, current = [], []
    with open(CORPUS, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                if current:
                    docs.append(current)
                current = []
                continue
            current += tokenizer.convert_tokens_to_ids(tokenizer.tokenize(line))
    if current:
        docs.append(current)
    return docs


# ---------------------------------------------------------------------------
# Tokenization
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["wordpiece", "character"])
def test_tokenization_equals_transformers_bert_japanese_tokenizer(vocab_dirs, kind, monkeypatch):
    from transformers import AutoTokenizer

    from components.pretraining_data import tokenization
    from components.pretraining_data.tokenization import load_tokenizer

    hf = AutoTokenizer.from_pretrained(vocab_dirs[kind])
    assert type(hf).__name__ == "BertJapaneseTokenizer"
    ours = load_tokenizer(vocab_dirs[kind])
    lines = [line.strip() for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()][:3000]
    lines += ["ＡＢＣ１２３ half-width ｶﾀｶﾅ", "x" * 101, "未知の字𠮷を含む文。"]
    unk_seen = 0
    for line in lines:
        hf_tokens = hf.tokenize(line)
        codes = ours.codes(line)
        assert [c & (ours.continuation - 1) for c in codes] == hf.convert_tokens_to_ids(hf_tokens), line
        if kind == "wordpiece":  # the continuation bit is exactly the "##" mark
            assert [bool(c & ours.continuation) for c in codes] == [t.startswith("##") for t in hf_tokens], line
        unk_seen += hf_tokens.count("[UNK]")
    assert unk_seen > 0  # the unknown-character and too-long-word paths were exercised
    # Once the word cache is full, new words are still tokenized the same.
    monkeypatch.setattr(tokenization, "_CACHE_LIMIT", 50)
    small_cache = load_tokenizer(vocab_dirs[kind])
    assert [small_cache.codes(line) for line in lines[:500]] == [ours.codes(line) for line in lines[:500]]
    assert len(small_cache._cache) == 50


# ---------------------------------------------------------------------------
# Output format and content
# ---------------------------------------------------------------------------

def test_model_garden_loader_reads_the_output(made):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from official.nlp.data import pretrain_dataloader

    output, summary = made["wordpiece"]
    config = pretrain_dataloader.BertPretrainDataConfig(
        input_path=output, seq_length=SEQ, max_predictions_per_seq=PRED, use_v2_feature_names=True,
        file_type="tfrecord_compressed", global_batch_size=16, is_training=True)
    batch = next(iter(pretrain_dataloader.BertPretrainDataLoader(config).load()))
    assert batch["input_word_ids"].shape == (16, SEQ)
    assert batch["masked_lm_positions"].shape == (16, PRED)
    assert batch["next_sentence_labels"].shape == (16, 1)
    assert json.loads(Path(summary_uri(output)).read_text()) == summary


@pytest.mark.parametrize("kind", ["wordpiece", "character"])
def test_instances_are_well_formed_and_come_from_the_source(made, vocab_dirs, kind):
    output, summary = made[kind]
    r = read_records(output)
    ids, mask, types = r["input_word_ids"], r["input_mask"], r["input_type_ids"]
    positions, labels, weights = r["masked_lm_positions"], r["masked_lm_ids"], r["masked_lm_weights"]
    nsp = r["next_sentence_labels"][:, 0]
    n_inst = len(ids)
    assert n_inst == summary["instances"]
    lengths = mask.sum(axis=1)
    counts = weights.sum(axis=1).astype(int)
    assert lengths.sum() == summary["tokens"] and counts.sum() == summary["masked_tokens"]
    assert nsp.sum() == summary["random_next"]
    tokens = files.load_vocab(vocab_dirs[kind]).tokens

    documents = [" " + " ".join(map(str, d)) + " " for d in hf_document_ids(vocab_dirs[kind])]
    rng = np.random.default_rng(0)
    checked_source = 0
    for i in range(n_inst):
        n, k = lengths[i], counts[i]
        assert (mask[i, :n] == 1).all() and (mask[i, n:] == 0).all()
        assert (ids[i, n:] == files.PAD_ID).all() and (types[i, n:] == 0).all()
        len_a = int((types[i, :n] == 0).sum()) - 2
        assert (types[i, :len_a + 2] == 0).all() and (types[i, len_a + 2:n] == 1).all()
        sep_positions = {len_a + 1, n - 1}
        assert len_a >= 1 and n - len_a - 3 >= 1 and n <= SEQ
        assert ids[i, 0] == files.CLS_ID and all(ids[i, p] == files.SEP_ID for p in sep_positions)
        # Masks: sorted real positions, never [CLS]/[SEP], weights 1 then 0 padding.
        pos = positions[i, :k]
        assert 1 <= k <= min(PRED, max(1, round(n * 0.15)))
        assert (np.diff(pos) > 0).all() and (weights[i, :k] == 1).all() and (weights[i, k:] == 0).all()
        assert (positions[i, k:] == 0).all() and (labels[i, k:] == 0).all()
        assert not (set(pos.tolist()) & (sep_positions | {0}))
        # Restore the masked tokens: segment A (and A+B when B is the true next)
        # is then a contiguous run of one document's tokens.
        restored = ids[i].copy()
        restored[pos] = labels[i, :k]
        assert files.CLS_ID not in restored[1:n] and files.SEP_ID not in restored[1:len_a + 1]
        if kind == "wordpiece":  # whole words: a masked "##" piece's word start is masked too
            masked = set(pos.tolist())
            for p in pos:
                if p > 1 and tokens[restored[p]].startswith("##"):
                    prev = p - 2 if p == len_a + 2 else p - 1
                    assert prev in masked, (i, p)
        if rng.random() < 400 / n_inst:
            a = " " + " ".join(map(str, restored[1:len_a + 1])) + " "
            b = " " + " ".join(map(str, restored[len_a + 2:n - 1])) + " "
            homes = [d for d in documents if a in d]
            assert homes, i
            assert any(b in d for d in documents), i
            if nsp[i] == 0:  # the true next: later in the same document (truncation may cut between)
                assert any(d.find(b, d.find(a) + 1) >= 0 for d in homes), i
            checked_source += 1
    assert checked_source > 200

    # 80% [MASK], 10% the original token, 10% a random one.
    at = ids[np.arange(n_inst)[:, None], positions][weights == 1]
    orig = labels[weights == 1]
    share_mask = (at == files.MASK_ID).mean()
    share_kept = (at == orig).mean()
    assert abs(share_mask - 0.8) < 0.01 and abs(share_kept - 0.1) < 0.01


@pytest.mark.parametrize("kind", ["wordpiece", "character"])
def test_statistics_match_the_reference(made, kind):
    _output, s = made[kind]
    ref_instances, ref_tokens, ref_masked, ref_random = REFERENCE[kind]
    assert abs(s["instances"] / ref_instances - 1) < 0.03
    assert abs(s["mean_tokens_per_instance"] / ref_tokens - 1) < 0.03
    assert abs(s["mean_masked_per_instance"] / ref_masked - 1) < 0.03
    assert abs(s["random_next_rate"] - ref_random) < 0.02
    assert s["documents"] == 351 and s["sentences"] == 15000 and s["input_lines"] == 15351


# ---------------------------------------------------------------------------
# Determinism, layout of outputs, storage
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> str:
    """The first ~100 documents, gzipped (inputs may be compressed)."""
    lines = CORPUS.read_text(encoding="utf-8").splitlines(keepends=True)
    blank = [i for i, line in enumerate(lines) if not line.strip()]
    path = tmp_path_factory.mktemp("small") / "shard.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(lines[:blank[100] + 1])
    return str(path)


def test_same_seed_same_bytes_whatever_the_workers(small_corpus, vocab_dirs, tmp_path):
    vocab = vocab_dirs["wordpiece"]
    one = create_pretraining_data(small_corpus, str(tmp_path / "w1.tfrecord.gz"), vocab, workers=1, dupe_factor=2)
    two = create_pretraining_data(small_corpus, str(tmp_path / "w2.tfrecord.gz"), vocab, workers=2, dupe_factor=2)
    other = create_pretraining_data(small_corpus, str(tmp_path / "s.tfrecord.gz"), vocab, dupe_factor=2,
                                     seed=shard_seed(12345, 1))
    data = {name: (tmp_path / f"{name}.tfrecord.gz").read_bytes() for name in ("w1", "w2", "s")}
    assert data["w1"] == data["w2"] and one["instances"] == two["instances"] > 0
    assert data["s"] != data["w1"] and other["instances"] > 0
    assert shard_seed(12345, 1) == shard_seed(12345, "1") != shard_seed(12345, 2) != shard_seed(1, 2)


def test_several_output_files_split_the_instances(small_corpus, vocab_dirs, tmp_path):
    summary = create_pretraining_data(small_corpus, str(tmp_path / "part.tfrecord.gz"), vocab_dirs["character"],
                                      num_output_files=3, dupe_factor=1)
    names = [f"part-{i:05d}-of-00003.tfrecord.gz" for i in range(3)]
    assert summary["outputs"] == [str(tmp_path / n) for n in names]
    counts = [len(read_records(str(tmp_path / n))["input_mask"]) for n in names]
    assert counts == summary["output_instances"] and sum(counts) == summary["instances"]
    assert max(counts) - min(counts) <= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names + ["part.summary.json"])


def test_stage_2_lengths(small_corpus, vocab_dirs, tmp_path):
    """Wikipedia's stage: seq 512, 76 predictions (positions need 2-byte varints)."""
    output = str(tmp_path / "s2.tfrecord.gz")
    summary = create_pretraining_data(small_corpus, output, vocab_dirs["wordpiece"], max_seq_length=512,
                                      max_predictions=76, dupe_factor=1)
    r = read_records(output, 512, 76)
    lengths = r["input_mask"].sum(axis=1)
    counts = r["masked_lm_weights"].sum(axis=1)
    assert len(lengths) == summary["instances"] > 0 and lengths.max() > 300 and counts.max() > 40
    assert (r["masked_lm_positions"].max(axis=1) < lengths).all() and r["masked_lm_positions"].max() > 127


def test_vocabularies_over_32768_tokens(small_corpus, vocab_dirs, tmp_path):
    """Ids then need 32-bit codes; the output is the same apart from the ids' range."""
    tokens = list(files.load_vocab(vocab_dirs["wordpiece"]).tokens)
    big = str(tmp_path / "big")
    files.write_tokenizer_dir(big, tokens + [f"[extra{i}]" for i in range(40_000 - len(tokens))],
                              subword_tokenizer_type="wordpiece")
    small = create_pretraining_data(small_corpus, str(tmp_path / "s.tfrecord.gz"), vocab_dirs["wordpiece"],
                                    dupe_factor=1)
    large = create_pretraining_data(small_corpus, str(tmp_path / "l.tfrecord.gz"), big, dupe_factor=1)
    assert large["vocab_size"] == 40_000 and large["instances"] == small["instances"]
    assert large["masked_tokens"] == small["masked_tokens"] and large["tokens"] == small["tokens"]
    r = read_records(str(tmp_path / "l.tfrecord.gz"))
    assert r["input_word_ids"].max() >= 32768 > r["masked_lm_ids"].max()  # random replacements reach the new ids


def test_gcs_input_vocab_and_output(gcs, small_corpus, vocab_dirs, tmp_path):
    storage.copy(small_corpus, f"{gcs}/corpus/shard.txt.gz")
    storage.copy_tree(vocab_dirs["wordpiece"], f"{gcs}/vocab")
    local = create_pretraining_data(small_corpus, str(tmp_path / "local.tfrecord.gz"), vocab_dirs["wordpiece"],
                                    dupe_factor=1)
    remote = create_pretraining_data(f"{gcs}/corpus/shard.txt.gz", f"{gcs}/out/shard.tfrecord.gz",
                                     f"{gcs}/vocab", dupe_factor=1)
    assert storage.read_bytes(f"{gcs}/out/shard.tfrecord.gz") == (tmp_path / "local.tfrecord.gz").read_bytes()
    assert json.loads(storage.read_text(f"{gcs}/out/shard.summary.json"))["instances"] == local["instances"]
    assert remote["instances"] == local["instances"]


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------

def test_empty_shard_is_a_clear_error_with_no_output(vocab_dirs, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \n", encoding="utf-8")
    with pytest.raises(BadInput, match="empty.txt: no sentences"):
        create_pretraining_data(str(empty), str(tmp_path / "out" / "x.tfrecord.gz"), vocab_dirs["wordpiece"])
    assert not (tmp_path / "out").exists()


def test_bad_vocab_dirs_fail_before_any_work(tmp_path):
    missing = tmp_path / "novocab"
    missing.mkdir()
    (missing / "tokenizer_config.json").write_text(json.dumps(files.tokenizer_config(subword_tokenizer_type="wordpiece")))
    with pytest.raises(BadInput, match="vocab.txt: no such file"):
        create_pretraining_data(str(tmp_path / "not-read.txt"), str(tmp_path / "o.tfrecord.gz"), str(missing))
    (missing / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nあ\n", encoding="utf-8")
    with pytest.raises(BadInput, match=r"must start with \[PAD\] \[UNK\] \[CLS\] \[SEP\] \[MASK\]"):
        create_pretraining_data(str(tmp_path / "not-read.txt"), str(tmp_path / "o.tfrecord.gz"), str(missing))
    specials = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n"
    for body, error in (("あ\nい\nあ\n", r"vocab.txt:8: token 'あ' repeats line 6"), ("あ\n\nい\n", r"vocab.txt:7: empty token")):
        (missing / "vocab.txt").write_text(specials + body, encoding="utf-8")
        with pytest.raises(BadInput, match=error):
            create_pretraining_data(str(tmp_path / "not-read.txt"), str(tmp_path / "o.tfrecord.gz"), str(missing))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["novocab"]


@pytest.mark.parametrize("workers", [1, 2])
def test_invalid_utf8_is_bad_input_naming_the_line_like_every_other_step(vocab_dirs, tmp_path, workers):
    from components.words.split import CHUNK_BYTES

    lines = CORPUS.read_bytes().splitlines(keepends=True)
    while sum(map(len, lines)) < 2.5 * CHUNK_BYTES:
        lines += lines
    bad = next(i for i in itertools.count() if sum(map(len, lines[:i])) > 2 * CHUNK_BYTES)  # in the third chunk
    lines[bad] = "壊れた行".encode("utf-8")[:-1] + b"\n"  # a cut multi-byte character
    shard = tmp_path / "shard.txt"
    shard.write_bytes(b"".join(lines))
    with pytest.raises(BadInput, match=rf"shard.txt:{bad + 1}: invalid UTF-8"):
        create_pretraining_data(str(shard), str(tmp_path / "o.tfrecord.gz"), vocab_dirs["wordpiece"], workers=workers)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard.txt"]


def test_a_rerun_with_fewer_files_leaves_exactly_its_own(small_corpus, vocab_dirs, tmp_path):
    """Files of the same stem an earlier run wrote go; other stems and other files stay."""
    vocab = vocab_dirs["character"]
    (tmp_path / "notes.txt").write_text("mine")
    create_pretraining_data(small_corpus, str(tmp_path / "other.tfrecord.gz"), vocab, dupe_factor=1)
    out = str(tmp_path / "part.tfrecord.gz")
    create_pretraining_data(small_corpus, out, vocab, num_output_files=3, dupe_factor=1)
    second = create_pretraining_data(small_corpus, out, vocab, num_output_files=2, dupe_factor=1)
    kept = ["notes.txt", "other.summary.json", "other.tfrecord.gz", "part.summary.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + [Path(u).name for u in second["outputs"]])
    create_pretraining_data(small_corpus, out, vocab, num_output_files=1, dupe_factor=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["part.tfrecord.gz"])
    create_pretraining_data(small_corpus, out, vocab, num_output_files=2, dupe_factor=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + [Path(u).name for u in second["outputs"]])


def test_failure_leaves_no_partial_output(small_corpus, vocab_dirs, tmp_path):
    data = Path(small_corpus).read_bytes()
    truncated = tmp_path / "cut.txt.gz"
    truncated.write_bytes(data[:len(data) * 2 // 3])
    out = tmp_path / "out"
    with pytest.raises(BadInput, match="cut.txt.gz: truncated"):
        create_pretraining_data(str(truncated), str(out / "x.tfrecord.gz"), vocab_dirs["wordpiece"])
    assert not out.exists() or list(out.iterdir()) == []


def test_parameters_are_checked(small_corpus, vocab_dirs, tmp_path):
    vocab = vocab_dirs["wordpiece"]
    with pytest.raises(BadInput, match="must end with .tfrecord.gz"):
        create_pretraining_data(small_corpus, str(tmp_path / "x.tfrecord"), vocab)
    with pytest.raises(BadInput, match="max_seq_length=4"):
        create_pretraining_data(small_corpus, str(tmp_path / "x.tfrecord.gz"), vocab, max_seq_length=4)
    with pytest.raises(BadInput, match="masked_lm_prob=0"):
        create_pretraining_data(small_corpus, str(tmp_path / "x.tfrecord.gz"), vocab, masked_lm_prob=0)


def test_cli(small_corpus, vocab_dirs, tmp_path, capsys):
    from pipelines.cli import main

    out = str(tmp_path / "cli.tfrecord.gz")
    assert main(["pretraining-data", small_corpus, out, "--vocab-dir", vocab_dirs["wordpiece"],
                 "--dupe-factor", "1", "--max-seq-length", "64", "--max-predictions", "10", "--seed", "7"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["summary"] == str(tmp_path / "cli.summary.json") and printed["max_seq_length"] == 64
    assert printed["mean_tokens_per_instance"] <= 64 and printed["mean_masked_per_instance"] <= 10
    assert main(["pretraining-data", str(tmp_path / "missing.txt"), out, "--vocab-dir",
                 vocab_dirs["wordpiece"]]) == 2
    assert "missing.txt: no such file" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# The batched steps against the recipe's one-at-a-time loops (SPEC 6.5)
# ---------------------------------------------------------------------------

def test_batched_truncation_and_mask_filling_equal_the_recipe_loops():
    from components.pretraining_data.instances import _greedy_fill, truncated_lengths

    def truncate_loop(a: int, b: int, most: int) -> tuple[int, int]:
        while a + b > most:  # drop from the longer side, B on ties
            if a > b:
                a -= 1
            else:
                b -= 1
        return a, b

    def fill_loop(sizes: list[int], to_predict: int) -> list[bool]:
        taken, count = [False] * len(sizes), 0
        for k, size in enumerate(sizes):
            if count >= to_predict:
                break
            if count + size > to_predict:
                continue  # a whole word that would overflow is skipped
            taken[k], count = True, count + size
        return taken

    rng = np.random.default_rng(7)
    a, b = rng.integers(1, 300, 5000), rng.integers(1, 300, 5000)
    got_a, got_b = truncated_lengths(a, b, 125)
    assert [tuple(x) for x in zip(got_a, got_b)] == [truncate_loop(x, y, 125) for x, y in zip(a, b)]

    n_rows, width = 3000, 64
    sizes = rng.choice([1, 1, 1, 2, 2, 3, 5, 9], size=(n_rows, width))
    n_groups = rng.integers(1, width + 1, n_rows)
    valid = np.arange(width)[None, :] < n_groups[:, None]
    to_predict = rng.integers(1, 20, n_rows)
    taken = _greedy_fill(sizes, valid, to_predict)
    for i in range(n_rows):
        expected = fill_loop(sizes[i, :n_groups[i]].tolist(), int(to_predict[i]))
        assert taken[i, :n_groups[i]].tolist() == expected and not taken[i, n_groups[i]:].any()


@pytest.mark.parametrize("kind", ["wordpiece", "character"])
def test_preview_shows_what_the_model_sees(made, vocab_dirs, kind):
    """The UI's sample-instance table: segments, masked positions and labels, as TensorFlow reads them."""
    from components import tfrecord
    from components.pretraining_data.preview import decode_instance, preview_markdown

    output, _summary = made[kind]
    tokens = files.load_vocab(vocab_dirs[kind]).tokens
    records = read_records(output)
    for i, example in enumerate(itertools.islice(tfrecord.iter_examples(output), 3)):
        inst = decode_instance(example, tokens)
        n_masked = int(records["masked_lm_weights"][i].sum())
        assert [m["position"] for m in inst["masked"]] == list(records["masked_lm_positions"][i][:n_masked])
        assert [m["label"] for m in inst["masked"]] == [tokens[t] for t in records["masked_lm_ids"][i][:n_masked]]
        assert inst["random_next"] == bool(records["next_sentence_labels"][i][0])
        assert inst["tokens"] == int(records["input_mask"][i].sum())
        assert inst["segment_a"] and inst["segment_b"]
        assert "[SEP]" not in inst["segment_a"] + inst["segment_b"]
    md = preview_markdown(output, vocab_dirs[kind], n=2)
    assert md.count("### Instance") == 2 and "| position | input | label |" in md


def test_preview_table_escapes_a_pipe_token(tmp_path):
    from components.pretraining_data import tfrecord as records
    from components.pretraining_data.instances import Batch
    from components.pretraining_data.preview import preview_markdown

    tokens = files.reserved_tokens() + ["|", "あ", "い"]
    files.write_tokenizer_dir(str(tmp_path / "vocab"), tokens, subword_tokenizer_type="wordpiece")
    pipe, a, i = (tokens.index(t) for t in ("|", "あ", "い"))
    seq, pred = 8, 2
    batch = Batch(input_ids=np.array([[files.CLS_ID, files.MASK_ID, a, files.SEP_ID, i, files.SEP_ID, 0, 0]]),
                  lengths=np.array([6]), segment_a=np.array([4]),
                  masked_positions=np.array([[1, 0]]), masked_ids=np.array([[pipe, 0]]),
                  masked_counts=np.array([1]), random_next=np.array([0]))
    shard = str(tmp_path / "x.tfrecord.gz")
    with records.open_gzip_records(shard) as writer:
        writer.write_many(records.batch_examples(batch, len(tokens)))
    md = preview_markdown(shard, str(tmp_path / "vocab"), n=1)
    assert "| 1 | [MASK] | \\| |" in md.splitlines()
    assert "- **A:** [MASK] あ" in md and "- **B:** い" in md


def _die_on_three(x: int) -> int:
    if x == 3:
        os.kill(os.getpid(), 9)  # as the OOM killer would
    return x


def test_a_worker_that_dies_fails_the_map_instead_of_hanging():
    import threading
    from concurrent.futures.process import BrokenProcessPool

    from components.parallel import ordered_map

    outcome = []

    def run():
        try:
            list(ordered_map(_die_on_three, range(20), workers=2))
        except BrokenProcessPool as e:
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert outcome, "ordered_map still waiting for a dead worker's result"


# ---------------------------------------------------------------------------
# The benchmark (bertja bench pretraining-data) and its technical corpus
# ---------------------------------------------------------------------------

def test_technical_corpus_is_deterministic_technical_japanese(tmp_path):
    from components.pretraining_data import bench_corpus

    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    docs = bench_corpus.write_corpus(str(a), 40_000, seed=3)
    bench_corpus.write_corpus(str(b), 40_000, seed=3)
    assert a.read_bytes() == b.read_bytes()
    lines = a.read_text(encoding="utf-8").split("\n")
    sentences = [line for line in lines if line]
    assert len(sentences) == 40_000 and lines.count("") >= docs > 1000
    assert all(bench_corpus._JAPANESE.search(line) for line in sentences)
    latin = sum(1 for line in sentences if any("a" <= c.lower() <= "z" for c in line))
    digits = sum(1 for line in sentences if any(c.isdigit() for c in line))
    assert latin > 0.4 * len(sentences) and digits > 0.1 * len(sentences)
    # Longer than the stored text: later passes fill the placeholders with new values.
    assert len(set(sentences)) > 0.75 * len(sentences)


def test_bench_reports_phases_against_the_floor_from_text_and_from_words(vocab_dirs, small_corpus, capsys):
    from components.pretraining_data.bench import main

    assert main([small_corpus, "--vocab-dir", vocab_dirs["character"], "--dupe-factor", "1"]) == 0
    out = capsys.readouterr().out
    for label in ("text, 1 worker", "text, 2 workers", "words, 1 worker", "words, 2 workers"):
        ratios = next(line for line in out.splitlines() if line.startswith(f"{label}: tokenize / instances / step x"))
        tokenize, instance, step = (float(x) for x in ratios.split(":")[-1].split("/"))
        assert 0 < tokenize and 0 < instance and step >= max(tokenize, instance)
    assert "split-words once" in out and "peak RSS" in out


def test_lowercasing_one_word_at_a_time_equals_transformers(tmp_path):
    """The word cache is keyed by MeCab's own words and lowercases each word when first seen:
    the ids transformers gives (its MeCab tokenizer lowercases token by token), and the same
    as lowercasing the whole line (Greek final sigma is the one case that looks at neighbours)."""
    from transformers import AutoTokenizer

    from components.pretraining_data.tokenization import load_tokenizer

    lines = ["PostgreSQLのVACUUMはLinuxでもlinuxでもLINUXでも動く。", "ΟΔΟΣ ΟΔΟΣ。ΣΑΣ、ΑΣ.", "İstanbulとǅemalのΣ",
             "ＡＢＣ１２３ Half-Width ｶﾀｶﾅ", "HTTP/2 の GET /API/V1?ID=42 は OK"]
    lowered = WordSplitter("unidic_lite", True)
    words = sorted({w for line in lines for w in lowered(line)})
    chars = sorted({c for w in words for c in w})
    tokens = (files.reserved_tokens() + chars + [files.CONTINUATION_PREFIX + c for c in chars]
              + [w for w in words if len(w) > 1][::2])  # every other word whole, the rest in pieces
    files.write_tokenizer_dir(str(tmp_path), tokens, subword_tokenizer_type="wordpiece", do_lower_case=True)
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    ours = load_tokenizer(str(tmp_path))
    assert ours.do_lower_case and hf.do_lower_case
    cased = WordSplitter("unidic_lite", False)
    for line in lines * 2:  # the second time from the cache
        codes = ours.codes(line)
        assert [c & (ours.continuation - 1) for c in codes] == hf.convert_tokens_to_ids(hf.tokenize(line)), line
        whole_line = [w for w in cased._tagger.parse(unicodedata.normalize("NFKC", line)).lower().split()]
        assert ours.words_bytes(cased(line)) == ours.words_bytes(whole_line) == ours.line_bytes(line)
    assert any(w != w.lower() for w in ours._cache)  # keys are MeCab's words, not lowercased


@pytest.mark.parametrize("vocab_size,width,nsp", [(32768, 128, True), (3_000_000, 300, True), (100, 16, False)])
def test_batch_examples_are_the_examples_protobuf_reads(vocab_size, width, nsp, monkeypatch):
    """The encoder (varints for the batch, looked-up byte strings for the rest) gives Examples that
    protobuf parses to the batch, whatever the varint widths (1 to 4 bytes) and whether a
    (segment A, length) pair's bytes are cached or not; ``framed_join`` frames each as
    ``frame`` does."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    from components.pretraining_data import tfrecord as records
    from components.pretraining_data.instances import Batch
    from components.tfrecord import frame, framed_join, parse_example

    rng = np.random.default_rng(7)
    n, pred = 50, 5
    lengths = rng.integers(3, width + 1, n)
    segment_a = np.minimum(lengths, rng.integers(2, width, n))
    cols = np.arange(width)[None, :]
    ids = np.where(cols < lengths[:, None], rng.integers(0, vocab_size, (n, width)), 0)
    ids[:, 0] = vocab_size - 1  # the widest varint
    counts = rng.integers(0, pred + 1, n)
    slots = np.arange(pred)[None, :] < counts[:, None]
    positions = np.where(slots, rng.integers(0, width, (n, pred)), 0)
    labels = np.where(slots, rng.integers(0, vocab_size, (n, pred)), 0)
    batch = Batch(input_ids=ids, lengths=lengths, segment_a=segment_a, masked_positions=positions,
                  masked_ids=labels, masked_counts=counts, random_next=rng.integers(0, 2, n))
    templates = records._templates(width, pred, nsp)
    templates.middle.clear()
    monkeypatch.setattr(templates, "middle_limit", 10)  # the cache full: the other pairs made each time
    examples = records.batch_examples(batch, vocab_size, nsp)
    assert len(templates.middle) == 10
    assert records.batch_examples(batch, vocab_size, nsp) == examples
    assert framed_join(examples) == b"".join(frame(e) for e in examples)
    for i, data in enumerate(examples):
        f = tf.train.Example.FromString(data).features.feature
        assert list(parse_example(data)) == ["input_word_ids", "input_type_ids", "input_mask", "masked_lm_positions",
                           "masked_lm_ids", "masked_lm_weights", *(["next_sentence_labels"] if nsp else [])]
        assert list(f["input_word_ids"].int64_list.value) == ids[i].tolist()
        assert list(f["input_mask"].int64_list.value) == (cols[0] < lengths[i]).astype(int).tolist()
        assert list(f["input_type_ids"].int64_list.value) == (
            (cols[0] >= segment_a[i]) & (cols[0] < lengths[i])).astype(int).tolist()
        assert list(f["masked_lm_positions"].int64_list.value) == positions[i].tolist()
        assert list(f["masked_lm_ids"].int64_list.value) == labels[i].tolist()
        assert list(f["masked_lm_weights"].float_list.value) == slots[i].astype(float).tolist()
        if nsp:
            assert list(f["next_sentence_labels"].int64_list.value) == [batch.random_next[i]]


def test_parts_compressed_apart_make_one_gzip_member_that_gzip_and_tensorflow_read(tmp_path):
    """Workers compress their units' records on their own; the writer joins the parts into one GZIP
    member whose trailer (CRC-32, length) gzip checks, and TensorFlow reads every record in order."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    from components.pretraining_data import tfrecord as records
    from components.tfrecord import framed_join

    rng = np.random.default_rng(3)
    units = [[rng.bytes(int(rng.integers(1, 3000))) for _ in range(int(k))] for k in (200, 0, 1, 1500)]
    path = tmp_path / "parts.tfrecord.gz"
    with records.open_gzip_records(str(path)) as writer:
        for unit in units:
            writer.write(records.deflate_records(unit))
    data = path.read_bytes()
    expected = [r for unit in units for r in unit]
    assert writer.records == len(expected)
    assert gzip.decompress(data) == framed_join(expected)  # gzip checks the CRC and length
    member = zlib.decompressobj(31)
    assert member.decompress(data) == framed_join(expected) and member.eof and not member.unused_data
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path), compression_type="GZIP")] == expected

"""WordPiece and character tokenizers: same vocabulary as the recipe's training, HF loading."""

from __future__ import annotations

import json
import os
import unicodedata

import pytest

from components import storage
from components.errors import BadInput
from components.mecab import WordSplitter
from components.tokenizer import files
from components.tokenizer.bench import recipe_tokenizer, recipe_vocabulary
from components.tokenizer.character import make_character_tokenizer, tokenizer_for_variant
from components.tokenizer.wordpiece import train_wordpiece
from pipelines import cli

CORPUS = os.path.join(os.path.dirname(__file__), "data", "ja_sentences.txt")
TRAIN_LINES = 3000
VOCAB_SIZE = 4000


def corpus_lines(n: int, skip: int = 0) -> list[str]:
    with open(CORPUS, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f][skip:skip + n]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("corpus") / "sample.txt"
    path.write_text("".join(line + "\n" for line in corpus_lines(TRAIN_LINES)), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def alphabet(tmp_path_factory) -> str:
    """An initial alphabet that covers only part of the corpus (so some characters are dropped)."""
    chars = sorted({c for line in corpus_lines(TRAIN_LINES // 2)
                    for c in unicodedata.normalize("NFKC", line) if c.isprintable()})
    path = tmp_path_factory.mktemp("alphabet") / "alphabet.txt"
    path.write_text("".join(c + "\n" for c in chars), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def wordpiece(tmp_path_factory, corpus, alphabet) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("wordpiece")
    n_alphabet = len(open(alphabet, encoding="utf-8").read().split("\n")) - 1
    stats = train_wordpiece([corpus], str(out), vocab_size=VOCAB_SIZE, limit_alphabet=n_alphabet,
                            initial_alphabet=alphabet, workers=2)
    return str(out), stats


def read_vocab(directory) -> list[str]:
    with open(os.path.join(directory, files.VOCAB_FILE), encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


# --- the recipe's way: a Python MeCab callback inside `tokenizers` (components.tokenizer.bench) ---

def recipe_training(corpus: str, alphabet: list[str], *, fix_ties: bool) -> list[str]:
    """Trains as the recipe does; ``fix_ties`` gives the ``##`` forms code-point ids up front."""
    reserved = files.reserved_tokens()
    tok = recipe_tokenizer()
    continuations = []
    if fix_ties:
        non_initial = set()
        for line in corpus_lines(TRAIN_LINES):
            normalized = tok.normalizer.normalize_str(line)
            for word, _span in tok.pre_tokenizer.pre_tokenize_str(normalized):
                non_initial.update(word[1:])
        continuations = ["##" + c for c in alphabet if c in non_initial]
    by_id = recipe_vocabulary(tok, corpus, vocab_size=VOCAB_SIZE, limit_alphabet=len(alphabet),
                              initial_alphabet=alphabet, special_tokens=reserved + continuations)
    head = set(reserved) | set(alphabet) | set(continuations)
    others = [t for t in by_id if t not in head]
    if not fix_ties:  # the recipe's own order: ## forms in hash order among the rest
        return reserved + alphabet + others
    return reserved + alphabet + continuations + others


# --- tests -----------------------------------------------------------------------------------

def test_vocabulary_is_the_one_the_recipes_callback_training_learns(corpus, alphabet, wordpiece):
    out, stats = wordpiece
    chars = read_vocab_file_chars(alphabet)
    ours = read_vocab(out)
    assert ours == recipe_training(corpus, chars, fix_ties=True)
    assert len(ours) == stats["vocab_size"] == VOCAB_SIZE
    assert stats["merged_tokens"] > 1000 and stats["characters_dropped"] > 0


def test_layout_matches_the_recipes_unfixed_training(corpus, alphabet, wordpiece):
    """Reserved tokens, then the alphabet in code-point order: ids the recipe's training gives too."""
    chars = read_vocab_file_chars(alphabet)
    ours = read_vocab(wordpiece[0])
    recipe = recipe_training(corpus, chars, fix_ties=False)
    head = 15 + len(chars)
    assert ours[:head] == recipe[:head] == files.reserved_tokens() + chars
    assert ours[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert ours[5:15] == [f"[unused{i}]" for i in range(10)]
    assert len(set(ours)) == len(ours) == len(recipe)
    # The same '##' forms; the merged tokens after them differ only where the
    # recipe breaks ties between equally frequent merges by hash order.
    def forms(vocab):
        return {t for t in vocab if t.startswith("##") and len(t) == 3}
    assert forms(ours) == forms(recipe)


def read_vocab_file_chars(alphabet: str) -> list[str]:
    return [line.rstrip("\n") for line in open(alphabet, encoding="utf-8")]


def test_same_files_for_any_number_of_workers(tmp_path, corpus, alphabet, wordpiece):
    out, _ = wordpiece
    n_alphabet = len(read_vocab_file_chars(alphabet))
    one = tmp_path / "one"
    train_wordpiece(corpus, str(one), vocab_size=VOCAB_SIZE, limit_alphabet=n_alphabet,
                    initial_alphabet=alphabet, workers=1)
    for name in sorted(os.listdir(out)):
        assert (one / name).read_bytes() == open(os.path.join(out, name), "rb").read(), name


def test_loads_as_bert_japanese_tokenizer_and_splits_as_the_vocabulary_says(wordpiece):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    out, _ = wordpiece
    hf = AutoTokenizer.from_pretrained(out)
    assert type(hf).__name__ == "BertJapaneseTokenizer"
    assert hf.subword_tokenizer_type == "wordpiece" and hf.word_tokenizer_type == "mecab"
    assert (hf.pad_token_id, hf.unk_token_id, hf.cls_token_id, hf.sep_token_id, hf.mask_token_id) == (0, 1, 2, 3, 4)
    assert hf.model_max_length == 512 and not hf.do_lower_case

    vocab = files.load_vocab(out).vocab
    split = WordSplitter()
    fast = Tokenizer.from_file(os.path.join(out, files.TOKENIZERS_JSON_FILE))
    whole_words = 0
    for sentence in corpus_lines(200):
        tokens = hf.tokenize(sentence)
        assert "[UNK]" not in tokens and all(t in vocab for t in tokens)
        # Pieces glue back into exactly MeCab's words...
        words = split(sentence)
        pieces: list[list[str]] = []
        for t in tokens:
            if t.startswith("##"):
                pieces[-1].append(t)
            else:
                pieces.append([t])
        assert ["".join(p).replace("##", "") for p in pieces] == words
        # ...and a word the vocabulary holds whole is never cut.
        for w, p in zip(words, pieces):
            if w in vocab:
                whole_words += 1
                assert p == [w]
        ids = hf(sentence)["input_ids"]
        assert ids[0] == files.CLS_ID and ids[-1] == files.SEP_ID
        assert fast.encode(" ".join(words)).ids == ids
    assert whole_words > 1000


def test_unseen_characters_outside_the_alphabet_are_unknown(wordpiece):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(wordpiece[0])
    assert hf.tokenize("彁") == ["[UNK]"]  # a ghost character: in no corpus


def test_character_tokenizer_is_the_head_of_the_wordpiece_vocabulary(tmp_path, alphabet, wordpiece):
    from transformers import AutoTokenizer

    out, _ = wordpiece
    size = 15 + len(read_vocab_file_chars(alphabet))
    char_dir = tmp_path / "character"
    stats = make_character_tokenizer(out, str(char_dir), size=size)
    assert stats == {"vocab_size": size, "characters": size - 15}
    assert read_vocab(char_dir) == read_vocab(out)[:size]
    loaded = files.load_vocab(str(char_dir))
    assert loaded.subword_tokenizer_type == "character" and loaded.mecab_dic == "unidic_lite"

    hf = AutoTokenizer.from_pretrained(str(char_dir))
    assert type(hf).__name__ == "BertJapaneseTokenizer" and hf.subword_tokenizer_type == "character"
    sentence = corpus_lines(1)[0]
    assert hf.tokenize(sentence) == list(unicodedata.normalize("NFKC", sentence))

    variant = tmp_path / "variant"
    assert tokenizer_for_variant("character", out, str(variant))["vocab_size"] == size
    assert read_vocab(variant) == read_vocab(char_dir)


def test_wordpiece_variant_is_the_wordpiece_directory(tmp_path, wordpiece):
    out, stats = wordpiece
    variant = tmp_path / "variant"
    assert tokenizer_for_variant("wordpiece", out, str(variant)) == {"vocab_size": stats["vocab_size"]}
    for name in os.listdir(out):
        assert (variant / name).read_bytes() == open(os.path.join(out, name), "rb").read()
    with pytest.raises(BadInput, match="variant='bpe'"):
        tokenizer_for_variant("bpe", out, str(tmp_path / "x"))


def test_character_size_must_fit_the_vocabulary(tmp_path, wordpiece):
    out, _ = wordpiece
    with pytest.raises(BadInput, match=r"size=99999: larger than the WordPiece vocabulary"):
        make_character_tokenizer(out, str(tmp_path / "c"), size=99999)
    with pytest.raises(BadInput, match=r"size=4000: .* single characters"):
        make_character_tokenizer(out, str(tmp_path / "c"), size=4000)
    assert not (tmp_path / "c").exists()


def test_lowercasing_is_one_parameter_for_vocabulary_and_config(tmp_path):
    lines = ["Tokyo Station and TOKYO Tower are in Tokyo.", "東京駅はTokyo Stationです。"] * 3
    corpus = tmp_path / "mixed.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "lower"
    train_wordpiece(str(corpus), str(out), vocab_size=200, limit_alphabet=None, do_lower_case=True)
    assert not any(c.isupper() for t in read_vocab(out)[15:] for c in t)
    loaded = files.load_vocab(str(out))
    assert loaded.do_lower_case is True
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(str(out)).tokenize("TOKYO") == ["tokyo"]


def test_bad_parameters_and_empty_corpus_are_named(tmp_path, corpus, alphabet):
    n_alphabet = len(read_vocab_file_chars(alphabet))
    with pytest.raises(BadInput, match=r"vocab_size=100: smaller than the 15 reserved tokens"):
        train_wordpiece(corpus, str(tmp_path / "a"), vocab_size=100, initial_alphabet=alphabet,
                        limit_alphabet=n_alphabet)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n \n", encoding="utf-8")
    with pytest.raises(BadInput, match=r"empty\.txt: empty corpus"):
        train_wordpiece(str(empty), str(tmp_path / "a"))
    with pytest.raises(BadInput, match=r"missing\.txt: no such corpus file"):
        train_wordpiece(str(tmp_path / "missing.txt"), str(tmp_path / "a"))
    assert not (tmp_path / "a").exists()


def test_too_small_a_vocab_size_for_the_continuation_forms_keeps_them_all(tmp_path, corpus, alphabet, wordpiece):
    """As in the recipe: every '##' form a corpus needs is kept, even past vocab_size."""
    n_alphabet = len(read_vocab_file_chars(alphabet))
    out = tmp_path / "small"
    stats = train_wordpiece(corpus, str(out), vocab_size=15 + n_alphabet + 10,
                            initial_alphabet=alphabet, limit_alphabet=n_alphabet)
    full = read_vocab(wordpiece[0])
    forms = [t for t in full if t.startswith("##") and len(t) == 3]
    assert read_vocab(out) == full[:15 + n_alphabet] + forms
    assert stats["vocab_size"] == len(forms) + 15 + n_alphabet > stats["requested_vocab_size"]
    assert stats["merged_tokens"] == 0


def test_gcs_in_and_out(gcs, corpus):
    src = f"{gcs}/corpus/sample.txt.gz"
    with storage.open_write(src, text=True) as f:
        f.write("".join(line + "\n" for line in corpus_lines(300)))
    out = f"{gcs}/tokenizers/wordpiece"
    stats = train_wordpiece([src], out, vocab_size=3000, limit_alphabet=None)
    loaded = files.load_vocab(out)
    assert len(loaded) == stats["vocab_size"] and loaded.subword_tokenizer_type == "wordpiece"
    assert storage.exists(f"{out}/{files.TOKENIZERS_JSON_FILE}")
    config = json.loads(storage.read_text(f"{out}/{files.TOKENIZER_CONFIG_FILE}"))
    assert config["mecab_kwargs"] == {"mecab_dic": "unidic_lite"}


def test_cli_train_and_character(tmp_path, corpus, capsys):
    out = tmp_path / "wp"
    assert cli.main(["tokenizer", "train", corpus, "--output-dir", str(out), "--vocab-size", "4000",
                     "--limit-alphabet", "0", "--workers", "1"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert len(read_vocab(out)) == stats["vocab_size"] == 4000
    assert cli.main(["tokenizer", "character", str(out), str(tmp_path / "ch"), "--size", "0"]) == 0
    n = json.loads(capsys.readouterr().out)["vocab_size"]
    assert read_vocab(tmp_path / "ch") == read_vocab(out)[:n]
    assert cli.main(["tokenizer", "character", str(out), str(tmp_path / "x"), "--size", "99999"]) == 2
    assert "size=99999" in capsys.readouterr().err


def test_ipadic_words_are_the_ones_bert_japanese_tokenizer_splits(tmp_path, corpus):
    """mecab_dic=ipadic (Tohoku v1): the PyPI dictionary through ipadic.MECAB_ARGS, as transformers uses it."""
    from transformers import AutoTokenizer

    out = tmp_path / "ipadic"
    train_wordpiece([corpus], str(out), vocab_size=VOCAB_SIZE, limit_alphabet=None, mecab_dic="ipadic")
    hf = AutoTokenizer.from_pretrained(str(out))
    assert hf.mecab_kwargs == {"mecab_dic": "ipadic"}
    ipadic_words, unidic_words = WordSplitter("ipadic"), WordSplitter("unidic_lite")
    differ = 0
    for sentence in corpus_lines(100, skip=TRAIN_LINES):
        assert hf.word_tokenizer.tokenize(sentence) == ipadic_words(sentence)
        differ += ipadic_words(sentence) != unidic_words(sentence)
    assert differ > 10  # the dictionary really changed


def test_mecab_dic_none_means_no_word_split_and_unknown_names_are_bad_input():
    from components.mecab import check_mecab_dic, word_splitter

    assert word_splitter("none") is None
    assert word_splitter("ipadic")("東京都") == ["東京", "都"]
    with pytest.raises(BadInput, match="mecab_dic='jumandic'"):
        check_mecab_dic("jumandic")


def test_byte_tokenizer_is_the_utf8_bytes_and_round_trips_japanese(tmp_path):
    from transformers import AutoTokenizer

    from components.tokenizer.byte import BYTE_OFFSET, write_byte_tokenizer

    out = tmp_path / "byte"
    stats = write_byte_tokenizer(str(out), mecab_dic="unidic_lite")
    assert stats["vocab_size"] == 261
    hf = AutoTokenizer.from_pretrained(str(out))
    assert hf.is_fast and len(hf) == 261
    assert (hf.pad_token_id, hf.unk_token_id, hf.cls_token_id, hf.sep_token_id, hf.mask_token_id) == (0, 1, 2, 3, 4)
    for text in corpus_lines(50) + ["絵文字😀と <0x41> と　全角ＡＢＣ\tタブ", "ｶﾀｶﾅ"]:
        ids = hf(text, add_special_tokens=False)["input_ids"]
        assert ids == [BYTE_OFFSET + b for b in text.encode("utf-8")]  # no normalisation, literal "<0x41>" too
        assert hf.decode(ids) == text
    assert hf("東京")["input_ids"] == [files.CLS_ID, *(BYTE_OFFSET + b for b in "東京".encode()), files.SEP_ID]
    info = files.read_tokenizer_info(str(out))
    assert info == {"type": "byte", "word_splitter": "mecab", "mecab_dic": "unidic_lite", "do_lower_case": False,
                    "vocab_size": 261, "special_token_ids": files.SPECIAL_TOKEN_IDS}
    none = tmp_path / "none"
    write_byte_tokenizer(str(none), mecab_dic="none")
    assert files.read_tokenizer_info(str(none))["word_splitter"] == "none"
    with pytest.raises(BadInput, match="mecab_dic='juman'"):
        write_byte_tokenizer(str(tmp_path / "bad"), mecab_dic="juman")


def test_every_tokenizer_directory_says_how_to_split_words(tmp_path, wordpiece):
    out, _ = wordpiece
    info = files.read_tokenizer_info(out)
    assert info == {"type": "wordpiece", "word_splitter": "mecab", "mecab_dic": "unidic_lite",
                    "do_lower_case": False, "vocab_size": VOCAB_SIZE, "special_token_ids": files.SPECIAL_TOKEN_IDS}
    assert os.path.exists(os.path.join(out, files.BERTJA_TOKENIZER_FILE))
    char = tmp_path / "char"
    make_character_tokenizer(out, str(char), size=100)
    assert files.read_tokenizer_info(str(char))["type"] == "character"
    copy = tmp_path / "copy"
    tokenizer_for_variant("wordpiece", out, str(copy))
    assert files.read_tokenizer_info(str(copy)) == info
    # A directory from before the file existed reads the same from its config.
    old = tmp_path / "old"
    for name in (files.VOCAB_FILE, files.TOKENIZER_CONFIG_FILE):
        storage.copy(os.path.join(out, name), str(old / name))
    assert files.read_tokenizer_info(str(old)) == info
    (old / files.BERTJA_TOKENIZER_FILE).write_text('{"type": "bpe"}')
    with pytest.raises(BadInput, match="bertja_tokenizer.json"):
        files.read_tokenizer_info(str(old))


def test_cli_byte(tmp_path, capsys):
    out = tmp_path / "byte"
    assert cli.main(["tokenizer", "train", "--type", "byte", "--output-dir", str(out), "--mecab-dic", "ipadic"]) == 0
    assert json.loads(capsys.readouterr().out)["mecab_dic"] == "ipadic"
    assert files.read_tokenizer_info(str(out))["mecab_dic"] == "ipadic"

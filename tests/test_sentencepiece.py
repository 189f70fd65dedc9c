"""SentencePiece tokenizers: the library's model, our tokenizer.json, and the two agreeing."""

from __future__ import annotations

import ast
import json
import os
import re

import pytest

from components.errors import BadInput
from components.tokenizer import files
from components.tokenizer.sentencepiece import (BYTE, CONTROL, MODEL_FILE, NORMAL, USER_DEFINED,
                                                read_model_proto, train_sentencepiece)
from pipelines import cli

CORPUS = os.path.join(os.path.dirname(__file__), "data", "ja_sentences.txt")
VOCAB = 8000

# Japanese, NFKC-affected (half-width kana, full-width Latin and digits, circled digits, ㍻, the
# ideographic space), emoji and characters the corpus does not have (byte fallback or [UNK]).
TEXTS = [
    "東京都に住んでいる。", "ｶﾀｶﾅとＡＢＣ１２３、①②③ ㍻", "絵文字😀🍣です👍🏽", "  前後と   中の空白  ",
    "鬱鬱鬱 龘 𠮷野家", "Hello World 2024", "全角\u3000スペース", "タブ\tと改行\nも", "",
    "とても長い単語アンチディスエスタブリッシュメンタリアニズム", "Ｔｏｋｙｏ　ＳＴＡＴＩＯＮ",
]


def sentencepiece_ids(model_dir, text: str, lower: bool = False) -> list[int]:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=os.path.join(model_dir, MODEL_FILE))
    return sp.encode(text.lower() if lower else text)


def model_proto(model_dir) -> dict:
    with open(os.path.join(model_dir, MODEL_FILE), "rb") as f:
        return read_model_proto(f.read())


@pytest.fixture(scope="module")
def fallback(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("sp") / "fallback")
    train_sentencepiece([CORPUS], out, vocab_size=VOCAB, byte_fallback=True, split_digits=True, workers=2)
    return out


@pytest.fixture(scope="module")
def lowercased(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("sp") / "lower")
    train_sentencepiece([CORPUS], out, vocab_size=VOCAB, do_lower_case=True, user_symbols=["<url>", "##"],
                        control_symbols=["[PAD]", "[CLS]", "[SEP]", "[MASK]", "<extra>"], workers=2)
    return out


@pytest.mark.parametrize("which", ["fallback", "lowercased"])
def test_auto_tokenizer_ids_equal_the_sentencepiece_models(which, request):
    from transformers import AutoTokenizer

    out = request.getfixturevalue(which)
    lower = which == "lowercased"
    hf = AutoTokenizer.from_pretrained(out)
    assert hf.is_fast
    assert (hf.pad_token_id, hf.unk_token_id, hf.cls_token_id, hf.sep_token_id, hf.mask_token_id) == (0, 1, 2, 3, 4)
    with open(CORPUS, encoding="utf-8") as f:
        corpus = [line.rstrip("\n") for _, line in zip(range(300), f)]
    for text in TEXTS + corpus + [t.upper() for t in TEXTS]:
        ids = hf(text, add_special_tokens=False)["input_ids"]
        assert ids == sentencepiece_ids(out, text, lower), text
    assert hf("東京")["input_ids"][0] == files.CLS_ID and hf("東京")["input_ids"][-1] == files.SEP_ID
    pair = hf("東京", "大阪")
    assert pair["token_type_ids"].count(1) == len(hf("大阪", add_special_tokens=False)["input_ids"]) + 1


def test_byte_fallback_spells_unknown_characters_and_round_trips(fallback):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(fallback)
    unseen = "龘𠮷😀"
    tokens = hf.tokenize(unseen)
    assert sum(re.fullmatch(r"<0x[0-9A-F]{2}>", t) is not None for t in tokens) >= 8
    assert files.UNK_TOKEN not in tokens
    for text in TEXTS + ["吾輩は猫である。名前はまだ無い。"]:
        ids = hf(text, add_special_tokens=False)["input_ids"]
        # The round trip is the model's normalised text (NFKC, whitespace collapsed).
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=os.path.join(fallback, MODEL_FILE))
        assert hf.decode(ids) == sp.decode(ids)
    assert hf.decode(hf("吾輩は猫である。😀", add_special_tokens=False)["input_ids"]) == "吾輩は猫である。😀"


def test_without_byte_fallback_unknown_characters_are_unk(lowercased):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(lowercased)
    ids = hf("龘は𠮷", add_special_tokens=False)["input_ids"]
    assert files.UNK_ID in ids and ids == sentencepiece_ids(lowercased, "龘は𠮷")
    assert hf.tokenize("TOKYO") == hf.tokenize("tokyo")
    # Special tokens stay special whatever the lowercasing (yoheikikuta's README warns of "[cls]").
    assert hf("[CLS] 東京 [SEP]", add_special_tokens=False)["input_ids"][0] == files.CLS_ID
    assert hf.convert_tokens_to_ids("<url>") == hf("<url>", add_special_tokens=False)["input_ids"][-1]
    for text in ["見て<url>と##も", "<url><url> ## x##y", "ＵＲＬは<url>"]:  # user pieces kept whole, as the model does
        assert hf(text, add_special_tokens=False)["input_ids"] == sentencepiece_ids(lowercased, text, True), text


def test_the_model_proto_reader_agrees_with_protobuf_itself(fallback):
    """Our minimal reader against protobuf's own parser, built from the descriptor sentencepiece ships."""
    import sentencepiece
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    source = open(os.path.join(os.path.dirname(sentencepiece.__file__), "sentencepiece_model_pb2.py")).read()
    serialized = ast.literal_eval(re.search(r"AddSerializedFile\((b'.*?')\)", source, re.S).group(1))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(serialized))
    ModelProto = message_factory.GetMessageClass(pool.FindMessageTypeByName("sentencepiece.ModelProto"))
    data = open(os.path.join(fallback, MODEL_FILE), "rb").read()
    real = ModelProto.FromString(data)
    ours = read_model_proto(data)
    assert ours["pieces"] == [(p.piece, p.score, p.type) for p in real.pieces]
    assert ours["normalizer_spec"]["precompiled_charsmap"] == real.normalizer_spec.precompiled_charsmap
    assert ours["normalizer_spec"]["name"] == real.normalizer_spec.name == "nmt_nfkc"
    for name in ("vocab_size", "byte_fallback", "split_digits", "character_coverage", "pad_id", "unk_id",
                 "bos_id", "eos_id", "num_threads", "input_sentence_size", "shuffle_input_sentence"):
        assert ours["trainer_spec"][name] == pytest.approx(getattr(real.trainer_spec, name)), name
    assert ours["trainer_spec"]["control_symbols"] == list(real.trainer_spec.control_symbols)


def _preset_options() -> list[tuple[str, dict]]:
    from pipelines import recipes

    names = {"sp_model_type": "model_type", "sp_character_coverage": "character_coverage",
             "sp_byte_fallback": "byte_fallback", "sp_split_digits": "split_digits",
             "sp_control_symbols": "control_symbols", "sp_user_symbols": "user_symbols",
             "sp_normalization": "normalization", "do_lower_case": "do_lower_case"}
    out = []
    for name, recipe in recipes.RECIPES.items():
        values = recipe.values()
        if "sentencepiece" in values.get("variants", []):
            out.append((name, {names[k]: v for k, v in values.items() if k in names}))
    return out


PRESETS = _preset_options()


@pytest.mark.parametrize("preset,options", PRESETS, ids=[p for p, _ in PRESETS])
def test_each_presets_options_reach_the_trainer_spec(preset, options, tmp_path):
    assert {"yoheikikuta-sp", "rinna-roberta", "modernbert-ja"} <= {p for p, _ in PRESETS}
    out = str(tmp_path / preset)
    # The presets' vocabularies (32000, 102400) are more than this corpus allows: only the size is ours.
    stats = train_sentencepiece([CORPUS], out, vocab_size=VOCAB, workers=2, seed=12345, **options)
    proto = model_proto(out)
    spec, normalizer = proto["trainer_spec"], proto["normalizer_spec"]
    assert spec["vocab_size"] == VOCAB == stats["vocab_size"] == len(proto["pieces"])
    assert spec["model_type"] == 1  # unigram
    assert spec["byte_fallback"] == options.get("byte_fallback", False)
    assert spec["split_digits"] == options.get("split_digits", False)
    assert spec["character_coverage"] == pytest.approx(options.get("character_coverage", 0.9995))
    assert normalizer["name"] == options.get("normalization", "nmt_nfkc")
    assert spec["num_threads"] == 2 and spec["pad_id"] == 0 and spec["unk_id"] == 1 and spec["bos_id"] == -1
    assert spec["control_symbols"][:3] == ["[CLS]", "[SEP]", "[MASK]"]
    assert [p for p, _s, t in proto["pieces"][:5]] == list(files.SPECIAL_TOKENS)
    assert (stats["byte_pieces"] == 256) == bool(options.get("byte_fallback"))
    info = json.load(open(os.path.join(out, files.BERTJA_TOKENIZER_FILE)))
    assert info["type"] == "sentencepiece" and info["word_splitter"] == "none"
    assert info["do_lower_case"] == options.get("do_lower_case", False)


def test_options_other_than_the_presets_reach_the_spec(fallback, lowercased):
    spec = model_proto(fallback)["trainer_spec"]
    assert spec["byte_fallback"] and spec["split_digits"]
    proto = model_proto(lowercased)
    assert proto["trainer_spec"]["control_symbols"] == ["[CLS]", "[SEP]", "[MASK]", "<extra>"]
    assert proto["trainer_spec"]["user_defined_symbols"] == ["<url>", "##"]
    types = {p: t for p, _s, t in proto["pieces"]}
    assert types["<extra>"] == CONTROL and types["<url>"] == USER_DEFINED
    assert not any(t == BYTE for t in types.values())
    assert not any(c.isupper() for p, t in types.items() if t == NORMAL for c in p)
    digits = [p for p, _s, t in model_proto(fallback)["pieces"] if t == NORMAL and sum(c.isdigit() for c in p) > 1]
    assert digits == []  # split_digits: no piece holds two digits


def test_same_seed_same_model(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    for out in (a, b):
        train_sentencepiece([CORPUS], out, vocab_size=VOCAB, seed=7, input_sentence_size=5000, workers=2)
    assert open(os.path.join(a, MODEL_FILE), "rb").read() == open(os.path.join(b, MODEL_FILE), "rb").read()
    assert model_proto(a)["trainer_spec"]["input_sentence_size"] == 5000


def test_bad_input(tmp_path):
    small = tmp_path / "small.txt"
    small.write_text("東京都に住んでいる。\n大阪に行く。\n" * 20, encoding="utf-8")
    with pytest.raises(BadInput, match=r"vocab_size=5000: more pieces than .*small.txt allow"):
        train_sentencepiece([str(small)], str(tmp_path / "o1"), vocab_size=5000)
    with pytest.raises(BadInput, match=r"vocab_size=200: byte_fallback=True needs at least 262"):
        train_sentencepiece([str(small)], str(tmp_path / "o2"), vocab_size=200, byte_fallback=True)
    with pytest.raises(BadInput, match=r"vocab_size=1000: fewer than the characters"):
        train_sentencepiece([CORPUS], str(tmp_path / "o3"), vocab_size=1000)
    with pytest.raises(BadInput, match="normalization='nfd'"):
        train_sentencepiece([CORPUS], str(tmp_path / "o4"), vocab_size=VOCAB, normalization="nfd")
    with pytest.raises(BadInput, match="model_type='bpe'"):
        train_sentencepiece([CORPUS], str(tmp_path / "o5"), vocab_size=VOCAB, model_type="bpe")
    with pytest.raises(BadInput, match="user_symbols"):
        train_sentencepiece([CORPUS], str(tmp_path / "o6"), vocab_size=VOCAB, user_symbols=["a b"])
    blank = tmp_path / "blank.txt"
    blank.write_text("  \n\n", encoding="utf-8")
    with pytest.raises(BadInput, match=r"blank.txt: empty corpus \(no text in 2 lines\)"):
        train_sentencepiece([str(blank)], str(tmp_path / "o7"), vocab_size=300)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blank.txt", "small.txt"]


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = cli.main(["tokenizer", "train", "--type", "sentencepiece", CORPUS, "--output-dir", str(out),
                   "--vocab-size", str(VOCAB), "--byte-fallback", "--split-digits", "--do-lower-case",
                   "--control-symbols", "[PAD],[CLS],[SEP],[MASK]", "--normalization", "nmt_nfkc_cf",
                   "--workers", "2"])
    assert rc == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["vocab_size"] == VOCAB and stats["byte_pieces"] == 256
    proto = model_proto(out)
    assert proto["trainer_spec"]["byte_fallback"] and proto["normalizer_spec"]["name"] == "nmt_nfkc_cf"
    assert cli.main(["tokenizer", "train", "--type", "sentencepiece", CORPUS, "--output-dir",
                     str(tmp_path / "bad"), "--vocab-size", "100", "--byte-fallback"]) == 2

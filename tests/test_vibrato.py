"""vibrato word splitting (Tohoku's bybert): dictionary costs decide words, MeCab's whitespace convention,
the byte tokenizer carrying its dictionary, and token shards grouping bytes into vibrato words."""

from __future__ import annotations

import io

import numpy as np
import pytest
import zstandard

from components.errors import BadInput
from components.mecab import VibratoSplitter, WordSplitter, make_word_splitter
from components.pretraining_data.shards import read_token_shards, write_token_shards
from components.pretraining_data.tokenization import load_tokenizer
from components.tokenizer import files
from components.tokenizer.byte import BYTE_OFFSET, write_byte_tokenizer
from pipelines import cli

CHAR_DEF = """DEFAULT 0 1 0
SPACE 0 1 0
KANJI 0 0 2
HIRAGANA 0 1 2
ALPHA 1 1 0
0x0020 SPACE
0x3000 SPACE
0x0009 SPACE
0x4E00..0x9FFF KANJI
0x3041..0x309F HIRAGANA
0x0041..0x005A ALPHA
0x0061..0x007A ALPHA
"""
UNK_DEF = """DEFAULT,0,0,1000,記号
SPACE,0,0,1000,空白
KANJI,1,1,1000,名詞
HIRAGANA,2,2,1000,助詞
ALPHA,1,1,1000,名詞
"""


def text_dictionary(root, costs: dict[str, int]) -> str:
    """A MeCab-format text dictionary (lex.csv, matrix.def, char.def, unk.def) with these word costs."""
    root.mkdir()
    lex = "".join(f"{w},{2 if w in 'はに' else 1},{2 if w in 'はに' else 1},{c},名詞\n" for w, c in costs.items())
    (root / "lex.csv").write_text(lex, encoding="utf-8")
    (root / "matrix.def").write_text("3 3\n" + "".join(f"{l} {r} 0\n" for l in range(3) for r in range(3)))
    (root / "char.def").write_text(CHAR_DEF, encoding="utf-8")
    (root / "unk.def").write_text(UNK_DEF, encoding="utf-8")
    return str(root)


WORDS = {"東京": 100, "京都": 300, "東": 300, "都": 300, "は": 50, "に": 50, "行く": 200, "大阪": 100}


@pytest.fixture
def dictionary(tmp_path) -> str:
    return text_dictionary(tmp_path / "dic", WORDS)


def test_the_dictionary_costs_decide_the_words(dictionary, tmp_path):
    assert VibratoSplitter(dictionary)("東京都に行く") == ["東京", "都", "に", "行く"]
    cheap_kyoto = text_dictionary(tmp_path / "kyoto", {**WORDS, "東京": 900, "京都": 50})
    assert VibratoSplitter(cheap_kyoto)("東京都に行く") == ["東", "京都", "に", "行く"]
    # NFKC as MeCab's WordSplitter (full-width Latin folds), lowercasing on request
    assert VibratoSplitter(dictionary, do_lower_case=True)("ＡＢＣに大阪") == ["abc", "に", "大阪"]


def mecab_dictionary(source: str, output) -> str:
    """The same text dictionary compiled for MeCab, with mecab-dict-index from fugashi's own libmecab."""
    import ctypes
    import glob
    import os

    import fugashi

    (lib,) = glob.glob(os.path.join(os.path.dirname(fugashi.__file__), os.pardir, "fugashi.libs", "libmecab*.so*"))
    dicrc = "cost-factor = 800\nbos-feature = BOS/EOS,*\nconfig-charset = UTF-8\n"
    with open(os.path.join(source, "dicrc"), "w") as f:
        f.write(dicrc)
    output.mkdir()
    args = [b"mecab-dict-index", b"-d", source.encode(), b"-o", str(output).encode(), b"-f", b"utf-8", b"-t", b"utf-8"]
    assert ctypes.CDLL(lib).mecab_dict_index(len(args), (ctypes.c_char_p * len(args))(*args)) == 0
    (output / "dicrc").write_text(dicrc)
    return str(output)


PARITY_CHAR_DEF = CHAR_DEF.replace("ALPHA 1 1 0\n", "ALPHA 1 1 0\nKATAKANA 1 1 2\nNUMERIC 1 1 0\n") + (
    "0x30A1..0x30FF KATAKANA\n0x0030..0x0039 NUMERIC\n")
PARITY_UNK_DEF = UNK_DEF + "KATAKANA,1,1,900,名詞\nNUMERIC,1,1,800,名詞\n"
PARITY_SENTENCES = ["東京都に行く", "京都は大阪に近い", "東京大学の学生は本を読む", "テレビで見たアニメは面白い",
                    "2024年に東京へ行った", "私はコンピューターサイエンスを学ぶ", "東京 に  行く ",
                    "x" * 30 + "と" + "ア" * 26, "　大阪の\u3000学生"]


def test_vibrato_splits_as_mecab_does_with_the_same_text_dictionary(tmp_path):
    """SPEC 7: identical words from vibrato (text dictionary) and MeCab (the same one, compiled)."""
    words = ["東京", "京都", "東", "京", "都", "大阪", "大学", "東京大学", "学生", "本", "読む", "読", "む", "に", "は",
             "の", "を", "へ", "で", "と", "行く", "行っ", "た", "近い", "見", "面白い", "私", "学ぶ", "年",
             "テレビ", "アニメ", "コンピューター", "サイエンス", "コンピュータ"]
    pos = {w: 2 if len(w) == 1 and "\u3041" <= w <= "\u309f" else 1 for w in words}
    root = tmp_path / "text"
    root.mkdir()
    (root / "lex.csv").write_text("".join(f"{w},{pos[w]},{pos[w]},{100 + 37 * i % 400},名詞\n"
                                          for i, w in enumerate(words)), encoding="utf-8")
    (root / "matrix.def").write_text("3 3\n" + "".join(f"{l} {r} {(l * 7 + r * 13) % 50 - 20}\n"
                                                       for l in range(3) for r in range(3)))
    (root / "char.def").write_text(PARITY_CHAR_DEF, encoding="utf-8")
    (root / "unk.def").write_text(PARITY_UNK_DEF, encoding="utf-8")
    vibrato = VibratoSplitter(str(root))
    mecab = WordSplitter(mecab_dictionary(str(root), tmp_path / "compiled"))
    for text in PARITY_SENTENCES:
        assert vibrato(text) == mecab(text), text
        assert vibrato.word_starts(text) == mecab.word_starts(text), text
    assert len(vibrato("x" * 30)) > 1  # unknown runs are cut as MeCab cuts them (max_grouping_len 24)


def test_word_starts_follow_mecabs_whitespace_convention(dictionary):
    """Where both dictionaries give the same words, vibrato's starts equal MeCab's (whitespace a word of its own)."""
    vibrato, mecab = VibratoSplitter(dictionary), WordSplitter("unidic_lite")
    for text in ["東京に行く", "東京 に  行く ", "  大阪は東京", "東京\u3000大阪"]:
        assert vibrato.word_starts(text) == mecab.word_starts(text), text
    assert vibrato.word_starts("東京 に  行く ") == [0, 2, 3, 4, 6, 8]


def test_byte_tokenizer_carries_its_vibrato_dictionary(dictionary, tmp_path):
    out = tmp_path / "byte"
    stats = write_byte_tokenizer(str(out), word_splitter="vibrato", vibrato_dict=dictionary)
    assert stats == {"vocab_size": 261, "word_splitter": "vibrato", "mecab_dic": "unidic_lite",
                     "vibrato_dict": files.VIBRATO_DIR}
    info = files.read_tokenizer_info(str(out))
    assert info["word_splitter"] == "vibrato" and info["vibrato_dict"] == "vibrato" and info["mecab_dic"] == "none"
    # The copy is what the data steps use: changing the source afterwards changes nothing.
    (tmp_path / "dic" / "lex.csv").write_text("東,1,1,1,名詞\n", encoding="utf-8")
    splitter = files.word_splitter_for(str(out))
    assert isinstance(splitter, VibratoSplitter) and splitter("東京都") == ["東京", "都"]
    codes = []
    tokenizer = load_tokenizer(str(out))
    tokenizer.extend_codes(codes, "東京都")
    cont = tokenizer.continuation
    # 9 bytes: 東京 (6 bytes) then 都 (3): word starts at bytes 0 and 6
    assert [c < cont for c in codes] == [True] + [False] * 5 + [True, False, False]


def test_token_shards_group_bytes_into_vibrato_words(dictionary, tmp_path):
    out = tmp_path / "byte"
    write_byte_tokenizer(str(out), word_splitter="vibrato", vibrato_dict=dictionary)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("東京都に行く\n大阪は 東京\n\n京都に行く\n", encoding="utf-8")
    write_token_shards(str(corpus), str(tmp_path / "tokens"), str(out), workers=2)
    shards = read_token_shards(str(tmp_path / "tokens"))
    assert shards.meta["tokenizer"]["word_splitter"] == "vibrato" and len(shards) == 2
    words = []
    for i in range(len(shards)):
        ids, starts = shards.document(i)
        words += [bytes(int(b) - BYTE_OFFSET for b in g).decode() for g in np.split(ids, np.nonzero(starts)[0][1:])]
    assert words == ["東京", "都", "に", "行く", "大阪", "は", " ", "東京", "京都", "に", "行く"]


def test_a_zstd_system_dictionary_is_decompressed_before_vibrato_reads_it(tmp_path):
    """No compiled dictionary can be built here (vibrato's Python API has no writer): vibrato's own
    error after decompression, and zstd's for corrupt data, both name the file."""
    plain, packed, corrupt = tmp_path / "system.dic", tmp_path / "system.dic.zst", tmp_path / "bad.dic.zst"
    plain.write_bytes(b"not a dictionary")
    packed.write_bytes(zstandard.ZstdCompressor().compress(b"not a dictionary"))
    corrupt.write_bytes(b"\x28\xb5\x2f\xfd garbage")
    for path in (plain, packed):
        with pytest.raises(BadInput, match=rf"{path}: not a vibrato system dictionary"):
            VibratoSplitter(str(path))
    with pytest.raises(BadInput, match=rf"{corrupt}: corrupt zstd data"):
        VibratoSplitter(str(corrupt))


def test_bad_vibrato_settings_are_refused(dictionary, tmp_path, capsys):
    with pytest.raises(BadInput, match="needs the vibrato dictionary"):
        write_byte_tokenizer(str(tmp_path / "a"), word_splitter="vibrato")
    with pytest.raises(BadInput, match="does not use it"):
        write_byte_tokenizer(str(tmp_path / "b"), word_splitter="mecab", vibrato_dict=dictionary)
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "lex.csv").write_text("東,1,1,1,名詞\n", encoding="utf-8")
    with pytest.raises(BadInput, match=r"partial'.*missing matrix.def, char.def, unk.def"):
        write_byte_tokenizer(str(tmp_path / "c"), word_splitter="vibrato", vibrato_dict=str(tmp_path / "partial"))
    with pytest.raises(BadInput, match="word_splitter='sudachi'"):
        make_word_splitter("sudachi")
    bad = text_dictionary(tmp_path / "bad", WORDS)
    (tmp_path / "bad" / "matrix.def").write_text("3 3\n0 0 x\n")
    with pytest.raises(BadInput, match="not a valid text dictionary"):
        write_byte_tokenizer(str(tmp_path / "d"), word_splitter="vibrato", vibrato_dict=bad)
    assert not (tmp_path / "d").exists()
    rc = cli.main(["tokenizer", "train", "--type", "byte", "--output-dir", str(tmp_path / "e"),
                   "--word-splitter", "vibrato", "--vibrato-dict", str(tmp_path / "nowhere.dic")])
    assert rc == 2 and "nowhere.dic': no such file" in capsys.readouterr().err


def test_cli_writes_a_vibrato_byte_tokenizer(dictionary, tmp_path):
    out = tmp_path / "byte"
    assert cli.main(["tokenizer", "train", "--type", "byte", "--output-dir", str(out),
                     "--word-splitter", "vibrato", "--vibrato-dict", dictionary]) == 0
    assert files.read_tokenizer_info(str(out))["word_splitter"] == "vibrato"
    assert (out / "vibrato" / "lex.csv").read_text(encoding="utf-8").startswith("東京,")


# ---------------------------------------------------------------------------
# Pipeline: parameters, source resolution, the optional download, the compiled DAG
# ---------------------------------------------------------------------------

def test_vibrato_parameters_are_checked_together():
    from pipelines.parameters import merged, validate

    byte = {"variants": ["byte"], "trainer": "torch", "torch_plan": "bybert", "data_format": "shards",
            "next_sentence_prediction": False}
    url = "https://example.org/bccwj-suw+unidic-cwj-3_1_1/system.dic.zst"
    validate(merged({**byte, "word_splitter": "vibrato", "vibrato_dict_url": url}), for_run=False)
    # vibrato words with mecab_dic=none still allow whole-word masking (MeCab then only splits sentences)
    validate(merged({**byte, "word_splitter": "vibrato", "vibrato_dict_url": url, "mecab_dic": "none"}), for_run=False)
    for values, name in (({**byte, "word_splitter": "vibrato"}, "vibrato_dict_url"),
                         ({**byte, "vibrato_dict_url": url}, "vibrato_dict_url"),
                         ({"word_splitter": "vibrato", "vibrato_dict_url": url}, "word_splitter"),
                         ({**byte, "word_splitter": "vibrato", "vibrato_dict_url": url + ".tar.xz"}, "vibrato_dict_url")):
        with pytest.raises(BadInput, match=rf"parameter {name}="):
            validate(merged(values), for_run=False)


def test_sources_look_up_the_vibrato_dictionary_only_when_given(tmp_path):
    from test_sources import _local_index

    from components.download.identity import identity_of
    from components.download.sources import resolve_sources

    _local_index(tmp_path / "cirrussearch")
    (tmp_path / "ja.txt.xz").write_bytes(b"cc")
    (tmp_path / "unidic.zip").write_bytes(b"zip")
    (tmp_path / "system.dic.zst").write_bytes(b"dictionary")
    common = dict(cirrus_index_url=str(tmp_path / "cirrussearch"), cc100_url=str(tmp_path / "ja.txt.xz"),
                  unidic_url=str(tmp_path / "unidic.zip"))
    without = resolve_sources(**common)
    assert without["vibrato_dict_url"] == "" and "vibrato_dict_size" not in without
    assert identity_of(without, "vibrato_dict") == identity_of({}, "vibrato_dict")
    got = resolve_sources(**common, vibrato_dict_url=str(tmp_path / "system.dic.zst"))
    assert got["vibrato_dict_size"] == 10 and got["vibrato_dict_md5"]
    with pytest.raises(BadInput, match=r"vibrato_dict_url='.*nope.dic': no such file"):
        resolve_sources(**common, vibrato_dict_url=str(tmp_path / "nope.dic"))


def test_bybert_compiles_with_vibrato_and_downloads_its_dictionary_only_for_the_byte_tokenizer(tmp_path):
    import yaml

    out = tmp_path / "p.yaml"
    url = "https://example.org/system.dic.zst"
    assert cli.main(["compile", str(out), "--profile", "local", "--recipe", "bybert", "--param", "word_splitter=vibrato",
                     "--param", f"vibrato_dict_url={url}"]) == 0
    spec = yaml.safe_load(out.read_text())
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["word_splitter"]["defaultValue"] == "vibrato" and params["vibrato_dict_url"]["defaultValue"] == url
    tokenizer_inputs = spec["components"]["comp-variant-tokenizer"]["inputDefinitions"]
    assert tokenizer_inputs["artifacts"]["vibrato_dict"]["isOptional"]
    tasks = [t for c in spec["components"].values() for t in c.get("dag", {}).get("tasks", {}).values()]
    takers = [t for t in tasks if "vibrato_dict" in t.get("inputs", {}).get("artifacts", {})]
    assert takers and all(t["componentRef"]["name"].startswith("comp-variant-tokenizer") for t in takers)
    producers = {t["inputs"]["artifacts"]["vibrato_dict"]["taskOutputArtifact"]["producerTask"] for t in takers}
    downloads = [t for t in tasks if t["taskInfo"]["name"] in producers]
    assert downloads and all(t["componentRef"]["name"].startswith("comp-download-source") and
                             "vibrato_dict_identity" in str(t["inputs"]) for t in downloads)
    assert cli.main(["compile", str(tmp_path / "d.yaml"), "--profile", "local", "--recipe", "bybert"]) == 0
    default = yaml.safe_load((tmp_path / "d.yaml").read_text())["root"]["inputDefinitions"]["parameters"]
    assert default["word_splitter"]["defaultValue"] == "mecab" and default["vibrato_dict_url"]["defaultValue"] == ""


def test_the_download_step_fetches_nothing_without_a_url_and_bytes_keep_mecab_words(tmp_path):
    import json

    from kfp import dsl, local

    from components.download.component import download_source
    from components.tokenizer.component import variant_tokenizer

    @dsl.pipeline(name="no-vibrato")
    def no_vibrato():
        dictionary = download_source(url="", identity="", extract_member="")
        variant_tokenizer(variant="byte", mecab_dic="ipadic", vibrato_dict=dictionary.outputs["data"])

    root = tmp_path / "root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    no_vibrato()
    manifests = {p.parent.name: json.loads(p.read_text()) for p in root.rglob("manifest.json")}
    assert manifests["data"]["files"] == [] and manifests["data"]["source_url"] == ""
    assert manifests["tokenizer"]["stats"] == {"type": "byte", "vocab_size": 261, "word_splitter": "mecab",
                                               "mecab_dic": "ipadic"}

"""The variant tokenizer and pretraining-data components under kfp.local, for the new tokenizer types.

A SentencePiece variant trains on the sample with no WordPiece input (an optional input: the MeCab
steps run only when a wordpiece/character variant is selected), a byte variant needs neither, and the
pretraining-data component writes MLM-only TFRecords or token shards from them.
"""


import json
import os

import pytest
import yaml
from kfp import compiler, dsl, local
from kfp.dsl import Dataset, Output

from components.images import image
from components.pretraining_data.component import pretraining_data
from components.tokenizer.component import variant_tokenizer

CORPUS = os.path.join(os.path.dirname(__file__), "data", "ja_sentences.txt")


@dsl.component(base_image=image("data"), install_kfp_package=False)
def corpus_files(source: str, corpus: Output[Dataset]):
    """The test's corpus file as a sample/shards artifact (manifest + one file)."""
    import os
    import shutil

    from components import artifacts

    os.makedirs(corpus.path, exist_ok=True)
    shutil.copyfile(source, os.path.join(corpus.path, "shard_0.txt"))
    artifacts.write_manifest(corpus.path, {"files": ["shard_0.txt"]})


@dsl.pipeline(name="variant-components")
def variant_pipeline(source: str, data_format: str):
    corpus = corpus_files(source=source)
    sp = variant_tokenizer(variant="sentencepiece", sample=corpus.outputs["corpus"], vocab_size=3000,
                           sp_character_coverage=0.995, sp_byte_fallback=True, do_lower_case=True,
                           sp_control_symbols=["[PAD]", "[CLS]", "[SEP]", "[MASK]"], seed=12345)
    byte = variant_tokenizer(variant="byte", mecab_dic="unidic_lite")
    for tok in (sp, byte):
        pretraining_data(shards=corpus.outputs["corpus"], shard="shard_0.txt", tokenizer=tok.outputs["tokenizer"],
                         max_seq_length=64, max_predictions=10, dupe_factor=1, masked_lm_prob=0.15,
                         short_seq_prob=0.1, base_seed=1, whole_word_masking=True, next_sentence_prediction=False,
                         data_format=data_format)


def test_compiled_components_take_the_new_inputs_as_optional(tmp_path):
    path = tmp_path / "p.yaml"
    compiler.Compiler().compile(variant_pipeline, str(path))
    spec = yaml.safe_load(path.read_text())
    inputs = spec["components"]["comp-variant-tokenizer"]["inputDefinitions"]
    assert inputs["artifacts"]["wordpiece"]["isOptional"] and inputs["artifacts"]["sample"]["isOptional"]
    params = inputs["parameters"]
    assert params["sp_control_symbols"]["defaultValue"] == ["[PAD]", "[CLS]", "[SEP]", "[MASK]"]
    data = spec["components"]["comp-pretraining-data"]["inputDefinitions"]["parameters"]
    assert data["data_format"]["defaultValue"] == "tfrecord" and data["next_sentence_prediction"]["defaultValue"]


@pytest.mark.parametrize("data_format", ["tfrecord", "shards"])
def test_components_run_under_kfp_local(tmp_path, data_format):
    from components.pretraining_data.shards import read_token_shards

    with open(CORPUS, encoding="utf-8") as f:
        source = tmp_path / "corpus.txt"
        source.write_text("".join(line for _, line in zip(range(1500), f)), encoding="utf-8")
    root = tmp_path / "root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    variant_pipeline(source=str(source), data_format=data_format)
    manifests = {}
    for path in root.rglob("manifest.json"):
        manifests[path.parent.relative_to(root).as_posix()] = json.loads(path.read_text())
    tokenizers = {k: v for k, v in manifests.items() if "/tokenizer" in k}
    assert sorted(m["subword"] for m in tokenizers.values()) == ["byte", "sentencepiece"]
    sp = next(m for m in tokenizers.values() if m["subword"] == "sentencepiece")
    assert sp["stats"]["vocab_size"] == 3000 and sp["stats"]["byte_pieces"] == 256
    examples = {k: v for k, v in manifests.items() if k.endswith("/examples")}
    assert len(examples) == 2
    for key, manifest in examples.items():
        if data_format == "shards":
            assert manifest["format"] == "shards" and manifest["files"] == ["tokens"]
            shards = read_token_shards(str(root / key / "tokens"))
            assert shards.meta["tokens"] == manifest["stats"]["tokens"] > 0
        else:
            assert manifest["stats"]["next_sentence_prediction"] is False
            assert manifest["stats"]["subword_tokenizer_type"] in ("sentencepiece", "byte")
    samples = [p.read_text() for p in root.rglob("samples")]
    assert len(samples) == 2
    assert all(("Token shards" if data_format == "shards" else "(MLM only)") in s for s in samples)


def test_the_dispatcher_names_what_a_variant_lacks(tmp_path):
    from components.errors import BadInput
    from components.tokenizer.variants import build_variant_tokenizer

    with pytest.raises(BadInput, match="variant='character': needs the WordPiece"):
        build_variant_tokenizer("character", output_dir=str(tmp_path / "c"))
    with pytest.raises(BadInput, match="variant='sentencepiece': needs the corpus sample"):
        build_variant_tokenizer("sentencepiece", output_dir=str(tmp_path / "s"), options={"vocab_size": 100})
    with pytest.raises(BadInput, match="variant='bpe'"):
        build_variant_tokenizer("bpe", output_dir=str(tmp_path / "b"))
    with pytest.raises(BadInput, match=r"tokenizer options \['sp_vocab'\]"):
        build_variant_tokenizer("byte", output_dir=str(tmp_path / "b"), options={"sp_vocab": 1})
    stats = build_variant_tokenizer("byte", output_dir=str(tmp_path / "byte"),
                                    options={"mecab_dic": "ipadic", "vocab_size": 32000, "sp_byte_fallback": True})
    assert stats == {"type": "byte", "vocab_size": 261, "word_splitter": "mecab", "mecab_dic": "ipadic"}

"""The PyTorch trainer's KFP component under kfp.local: byte tokenizer -> token shards -> train_torch
(the three stages of the ModernBERT-Ja plan, tiny) -> a Hugging Face directory that answers fill-mask."""

import json
import os

import pytest
import yaml
from kfp import compiler, dsl, local
from test_variant_components import corpus_files  # the corpus file as a shards artifact

pytest.importorskip("torch")

from components.pretraining_data.component import pretraining_data  # noqa: E402
from components.tokenizer.component import variant_tokenizer  # noqa: E402
from components.torch_train.component import train_torch  # noqa: E402

CORPUS = os.path.join(os.path.dirname(__file__), "data", "ja_sentences.txt")


@dsl.pipeline(name="torch-trainer")
def torch_pipeline(source: str):
    corpus = corpus_files(source=source)
    byte = variant_tokenizer(variant="byte", mecab_dic="unidic_lite")
    with dsl.ParallelFor(["shard_0.txt"]) as shard:
        data = pretraining_data(shards=corpus.outputs["corpus"], shard=shard, tokenizer=byte.outputs["tokenizer"],
                                max_seq_length=128, max_predictions=20, dupe_factor=1, masked_lm_prob=0.15,
                                short_seq_prob=0.1, base_seed=1, whole_word_masking=True,
                                next_sentence_prediction=False, data_format="shards")
    train_torch(shards=dsl.Collected(data.outputs["examples"]),
                tokenizer=byte.outputs["tokenizer"], variant="byte", plan="modernbert-ja",
                architecture="modernbert-tiny", seq_lengths=[64, 128, 128], train_steps=[6, 2, 2],
                global_batch_size=4, micro_batch_size=2, workers=0)


def test_component_compiles_with_the_plan_defaults_optional(tmp_path):
    path = tmp_path / "p.yaml"
    compiler.Compiler().compile(train_torch, str(path))
    spec = yaml.safe_load(path.read_text())
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["seq_lengths"]["defaultValue"] == [] and params["architecture"]["defaultValue"] == ""
    assert spec["root"]["inputDefinitions"]["artifacts"]["shards"]["isArtifactList"]
    assert "bertja-convert" in json.dumps(spec["deploymentSpec"])


def test_trains_under_kfp_local_and_the_output_answers_fill_mask(tmp_path):
    import transformers

    with open(CORPUS, encoding="utf-8") as f:
        source = tmp_path / "corpus.txt"
        source.write_text("".join(line for _, line in zip(range(800), f)), encoding="utf-8")
    root = tmp_path / "root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    torch_pipeline(source=str(source))
    [model_dir] = [p.parent for p in root.rglob("manifest.json") if p.parent.name == "model"]
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["plan"] == "modernbert-ja" and [s["stage"] for s in manifest["stages"]] == [1, 2, 3]
    assert all(s["tokens_per_sec"] > 0 for s in manifest["stages"])
    hf = model_dir / manifest["final_model_dir"]
    answers = transformers.pipeline("fill-mask", model=str(hf), device="cpu")("今日は[MASK]です。")
    assert len(answers) == 5
    [curve] = [p for p in root.rglob("loss_curve") if p.is_file()]
    assert curve.read_text().count("<polyline") == 3
    [metrics] = [p for p in root.rglob("metrics") if p.is_file() and "train-torch" in str(p)]
    assert json.loads(metrics.read_text())["stage1_tokens_per_sec"] > 0

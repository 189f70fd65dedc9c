"""Recipes (pipelines/recipes.py): every preset compiles with its values as the YAML's defaults,
combines with the profiles as documented, and bad combinations are refused with exit 2."""

import argparse
import subprocess
import sys

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from components.errors import BadInput
from pipelines import commands, parameters, profiles, recipes
from pipelines.cli import main as bertja

PRESETS = ("tohoku-v3", "tohoku-v2", "tohoku-v1", "yoheikikuta-sp", "rinna-roberta", "modernbert-ja", "bybert")


def compiled_defaults(path) -> dict:
    """The root parameters' defaults of a compiled YAML, parsed strictly into the pipeline spec."""
    doc = next(yaml.safe_load_all(path.read_text()))
    spec = json_format.ParseDict(doc, pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    return {k: json_format.MessageToDict(v.default_value) for k, v in spec.root.input_definitions.parameters.items()}


def test_the_table_holds_the_seven_presets_with_seed_and_trainer():
    assert tuple(recipes.RECIPES) == PRESETS and recipes.DEFAULT == "tohoku-v3"
    for r in recipes.RECIPES.values():
        assert r.seed.split(" ")[0].endswith(".txt"), r.name  # a document under seeds/
        assert r.trainer in recipes.TRAINERS and "\n" not in r.description
        assert set(r.values()) <= parameters.FIELDS, r.name
        parameters.validate(parameters.merged(r.values()), for_run=False)  # each preset is valid on its own
    assert "CirrusSearch" in recipes.get("tohoku-v1").description and "ipadic" in recipes.get("tohoku-v1").description


@pytest.mark.parametrize("profile", ["gcp", "local"])
@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_compiles_with_its_values_as_the_yaml_defaults(tmp_path, name, profile):
    out = tmp_path / "p.yaml"
    extra = ["--pipeline-root", "gs://bertja-test/root"] if profiles.get(profile).needs_gcs_root else []
    assert bertja(["compile", str(out), "--profile", profile, "--recipe", name, *extra]) == 0
    defaults = compiled_defaults(out)
    assert set(defaults) == parameters.FIELDS
    expected = commands.pipeline_values(profile, {}, for_run=False, recipe=name)
    assert {k: defaults[k] for k in expected} == expected
    recipe = recipes.get(name)
    sized = set(profiles.get(profile).parameters)  # the profile's sizes win, its other values agree
    for key, value in recipe.values().items():
        if key in recipe.defining:
            assert recipes.agrees(value, defaults[key]), (key, defaults[key])
        elif key not in sized:
            assert defaults[key] == value, key


def test_profile_and_recipe_combine_as_documented():
    local = commands.pipeline_values("local", {}, for_run=False, recipe="yoheikikuta-sp")
    assert local["variants"] == ["sentencepiece"]  # the profile's wordpiece contradicts the recipe: dropped
    assert local["vocab_size"] == profiles.get("local").parameters["vocab_size"]  # how big: the profile's
    assert local["stage1_max_predictions"] == 20 and local["stage1_corpus"] == "wikipedia"  # the recipe's
    v3 = commands.pipeline_values("local", {}, for_run=False)
    assert v3["variants"] == ["wordpiece"]  # a subset of tohoku-v3's variants narrows it
    gcp = commands.pipeline_values("gcp", {"vocab_size": 8000}, for_run=False, recipe="yoheikikuta-sp")
    assert gcp["vocab_size"] == 8000 and gcp["training_backend"] == "tpu"  # --param beats both
    assert commands.pipeline_values("gcp", {}, for_run=False, recipe="modernbert-ja")["vocab_size"] == 102_400


def test_without_a_recipe_the_defaults_are_tohoku_v3():
    assert commands.pipeline_values("gcp", {}, for_run=False) == \
        commands.pipeline_values("gcp", {}, for_run=False, recipe="tohoku-v3")
    assert parameters.merged(recipes.get("tohoku-v3").values()) == parameters.PipelineParameters().as_dict()


def test_unknown_recipe_is_refused_with_exit_2(tmp_path, capsys):
    assert bertja(["compile", str(tmp_path / "p.yaml"), "--profile", "local", "--recipe", "bert-xl"]) == 2
    err = capsys.readouterr().err
    assert "unknown recipe 'bert-xl'" in err and "tohoku-v3" in err
    assert not (tmp_path / "p.yaml").exists()


@pytest.mark.parametrize("name,param,recipe_value", [
    ("rinna-roberta", "next_sentence_prediction=true", "next_sentence_prediction=False"),
    ("yoheikikuta-sp", "variants=wordpiece", "variants=['sentencepiece']"),
    ("bybert", "trainer=model-garden", "trainer='torch'"),
    ("tohoku-v2", "stage1_corpus=cc100", "stage1_corpus='none'"),
    ("tohoku-v3", "whole_word_masking=false", "whole_word_masking=True"),
])
def test_a_param_contradicting_a_defining_value_is_refused_naming_both(tmp_path, capsys, name, param, recipe_value):
    code = bertja(["compile", str(tmp_path / "p.yaml"), "--profile", "local", "--recipe", name, "--param", param])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"--param {param.split('=')[0]}=" in err and recipe_value in err and repr(name) in err


def test_params_that_agree_or_are_not_defining_are_taken(tmp_path):
    out = tmp_path / "p.yaml"
    assert bertja(["compile", str(out), "--profile", "local", "--recipe", "tohoku-v1",
                   "--param", "whole_word_masking=true", "--param", "variants=character"]) == 0
    defaults = compiled_defaults(out)
    assert defaults["whole_word_masking"] is True and defaults["variants"] == ["character"]
    assert defaults["mecab_dic"] == "ipadic"


@pytest.mark.parametrize("params,fragment", [
    (["sp_byte_fallback=true", "vocab_size=200", "limit_alphabet=100"], "vocab_size="),  # < 256 + specials
    (["sp_normalization=nfd"], "sp_normalization="),
    (["sp_control_symbols=[CLS],[CLS]"], "sp_control_symbols="),
    (["sp_character_coverage=0"], "sp_character_coverage="),
])
def test_bad_sentencepiece_options_are_refused_with_exit_2(tmp_path, capsys, params, fragment):
    args = ["compile", str(tmp_path / "p.yaml"), "--profile", "local", "--recipe", "yoheikikuta-sp"]
    for p in params:
        args += ["--param", p]
    code = bertja(args)
    err = capsys.readouterr().err
    assert code == 2 and fragment in err, err


@pytest.mark.parametrize("changes,name", [
    ({"variants": ["byte"]}, "variants"),  # the byte variant trains with the PyTorch trainer
    ({"mecab_dic": "none", "whole_word_masking": False}, "mecab_dic"),  # WordPiece/character need MeCab words
    ({"variants": ["sentencepiece"], "mecab_dic": "none"}, "whole_word_masking"),  # no words to group
    ({"data_format": "shards"}, "data_format"),  # Model Garden reads TFRecords
    ({**recipes.get("rinna-roberta").values(), "next_sentence_prediction": True}, "next_sentence_prediction"),
    ({**recipes.get("bybert").values(), "stage1_corpus": "none"}, "stage1_corpus"),
    ({"variants": ["character"], "vocab_size": 8000, "limit_alphabet": 3000, "character_vocab_size": 9000},
     "character_vocab_size"),
])
def test_combinations_no_trainer_can_use_are_refused_naming_the_parameter(changes, name):
    with pytest.raises(BadInput, match=f"parameter {name}="):
        parameters.validate(parameters.merged(changes), for_run=False)


def test_submit_with_a_pipeline_file_and_a_recipe_sends_the_recipes_values(tmp_path):
    package = tmp_path / "p.yaml"
    package.write_text("{}")
    args = argparse.Namespace(param=["vocab_size=8000", "gcp_project=my-project"], profile="gcp", recipe="rinna-roberta",
                              pipeline_file=str(package), pipeline_root=None)
    path, arguments = commands._package(args)
    assert path == str(package)
    assert arguments["trainer"] == "torch" and arguments["next_sentence_prediction"] is False
    assert arguments["variants"] == ["sentencepiece"] and arguments["vocab_size"] == 8000
    args.recipe = None
    assert commands._package(args)[1] == {"vocab_size": 8000, "gcp_project": "my-project"}  # without --recipe: only what was typed


def test_submit_and_schedule_send_the_recipes_pipeline(capsys):
    """Against a local server speaking the KFP API (tests/fake_kfp_api.py): the uploaded spec's
    defaults are the recipe's, the run's arguments only what was typed."""
    from fake_kfp_api import FakeKfpApi

    api = FakeKfpApi()
    try:
        assert bertja(["submit", "--endpoint", api.endpoint, "--experiment", "e", "--profile", "kind",
                       "--recipe", "rinna-roberta", "--param", "vocab_size=8000"]) == 0, capsys.readouterr().err
        assert bertja(["schedule", "--endpoint", api.endpoint, "--experiment", "e", "--profile", "kind",
                       "--recipe", "tohoku-v2", "--cron", "0 0 3 1 * *", "--name", "v2"]) == 0, \
            capsys.readouterr().err
        (run,) = api.runs.values()
        (rr,) = api.recurring_runs.values()
    finally:
        api.stop()
    defaults = {k: v.get("defaultValue") for k, v in
                run["pipeline_spec"]["pipeline_spec"]["root"]["inputDefinitions"]["parameters"].items()}
    assert defaults["trainer"] == "torch" and defaults["variants"] == ["sentencepiece"]
    assert run["runtime_config"]["parameters"] == {"vocab_size": 8000}
    spec = rr["pipeline_spec"]["pipeline_spec"]["root"]["inputDefinitions"]["parameters"]
    assert spec["stage1_corpus"]["defaultValue"] == "none" and spec["character_vocab_size"]["defaultValue"] == 6144
    assert bertja(["submit", "--endpoint", "http://127.0.0.1:9", "--experiment", "e", "--profile", "kind",
                   "--recipe", "rinna-roberta", "--param", "next_sentence_prediction=true"]) == 2  # before any call


def test_bertja_recipes_lists_name_description_seed_and_trainer():
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "recipes"], capture_output=True, text=True,
                         check=True).stdout
    for r in recipes.RECIPES.values():
        assert r.name in out and r.description in out and r.seed in out and f"trainer: {r.trainer}" in out
        assert all(f"differs: {d}" in out for d in r.departures), r.name
    assert "tohoku-v3 (default)" in out


def test_the_readme_table_names_every_recipe_with_its_seed_and_trainer():
    import pathlib

    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip().split(" ")[0].strip("`"): line for line in readme.splitlines()
            if line.startswith("| `")}
    for r in recipes.RECIPES.values():
        row = rows[r.name]
        assert f"`{r.seed.split(' ')[0]}`" in row, r.name
        assert ("Model Garden" if r.trainer == "model-garden" else "PyTorch") in row, r.name


def test_one_stage_recipes_train_stage_2_from_scratch_and_v3_keeps_its_two_stages():
    from components.train.stages import stage_plan

    two = stage_plan(config="tiny", stage1_data=["a"], stage2_data=["b"], model_root="/m")
    assert [s["stage"] for s in two] == [1, 2] and two[1]["init_checkpoint"] == "/m/stage1_cc100"
    (one,) = stage_plan(config="tiny", stage1_data=[], stage2_data=["b"], model_root="/m", single_stage=True,
                        shapes=((128, 19), (256, 38)))
    assert one["stage"] == 2 and one["init_checkpoint"] is None and one["data"] == "b"
    assert "task.train_data.seq_length=256" in one["overrides"]
    with pytest.raises(BadInput, match="one stage"):
        stage_plan(config="tiny", stage1_data=["a"], stage2_data=[], model_root="/m", single_stage=True)


def test_training_identity_changes_only_for_other_recipes(tmp_path):
    from components.train.stages import training_identity

    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "vocab.txt").write_text("[PAD]\n")
    shard = tmp_path / "s.tfrecord.gz"
    shard.write_bytes(b"x")
    args = dict(variant="wordpiece", model_size="tiny", tokenizer_dir=str(tok), shapes=((128, 19), (512, 76)),
                train_steps=(0, 0), stage1_shards=[{"shard": "c", "files": {"f": str(shard)}}],
                stage2_shards=[{"shard": "w", "files": {"f": str(shard)}}])
    v3 = training_identity(**args)
    assert set(v3) == {"version", "variant", "model_size", "profile", "tokenizer", "stages"}  # as before issue 12
    one = training_identity(**args, single_stage=True)
    assert [s["stage"] for s in one["stages"]] == [2] and one != v3
    assert training_identity(**args, next_sentence_prediction=False)["next_sentence_prediction"] is False


def test_release_names_keep_the_recipes_and_name_other_tokenizers():
    from components.publish.naming import model_name, release_name

    assert model_name("base", "character") == "bert-base-japanese-char"  # the recipe's names are kept
    assert model_name("base", "wordpiece") == "bert-base-japanese"
    assert release_name("tiny", "byte", "20240101") == "bert-tiny-japanese-byte-20240101"


def test_pytorch_trainer_recipes_name_their_plan_and_it_fits_the_profiles():
    """Issue 13: each PyTorch-trainer preset defines its trainer plan; the small profiles shrink the
    plan's model to its family's tiny shape and their lengths fit every architecture."""
    from components.torch_train import configs
    from components.torch_train.step import resolve_architecture

    plans = {r.name: r.values()["torch_plan"] for r in recipes.RECIPES.values() if r.trainer == "torch"}
    assert plans == {"rinna-roberta": "rinna-roberta", "modernbert-ja": "modernbert-ja", "bybert": "bybert"}
    for name, plan in plans.items():
        assert "torch_plan" in recipes.get(name).defining and "issue 13" not in recipes.get(name).description
        for profile in ("local", "kind"):
            values = commands.pipeline_values(profile, {}, for_run=False, recipe=name)
            arch = resolve_architecture(plan, values["torch_architecture"])
            assert arch.endswith("-tiny") and configs.ARCHITECTURES[arch].family == configs.ARCHITECTURES[
                configs.plan(plan).architecture].family
        assert resolve_architecture(plan, "") == configs.plan(plan).architecture
    with pytest.raises(BadInput, match="torch_plan"):  # a torch run without a plan
        parameters.validate(parameters.merged({**recipes.get("bybert").values(), "torch_plan": ""}), for_run=False)
    with pytest.raises(BadInput, match="torch_seq_lengths"):  # RoBERTa's position table ends at 512
        parameters.validate(parameters.merged({**recipes.get("rinna-roberta").values(),
                                               "torch_seq_lengths": [1024]}), for_run=False)


# ---------------------------------------------------------------------------
# `bertja run --local --recipe NAME` on the bundled corpus (slow: each trains or shards for real)
# ---------------------------------------------------------------------------

# As small as tests/test_pipeline_local.py's run; same DAG.
TINY = {"stage1_train_steps": 12, "stage2_train_steps": 8, "stage2_max_seq_length": 128,
        "stage2_max_predictions": 19, "stage1_dupe_factor": 1, "stage2_dupe_factor": 1}


def _manifests(out, key):
    import glob
    import json
    import os

    found = []
    for path in glob.glob(os.path.join(out, "pipeline-root", "**", "manifest.json"), recursive=True):
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
        if key in manifest:
            found.append(manifest)
    return found


def _run(tmp_path_factory, name, overrides=None):
    out = tmp_path_factory.mktemp(name)
    result = commands.run_local(str(out), "local", {**TINY, **(overrides or {})}, recipe=name)
    return str(out), result


@pytest.mark.slow
def test_local_tohoku_v2_trains_one_stage_and_answers_fill_mask(tmp_path_factory):
    from transformers import AutoTokenizer

    out, result = _run(tmp_path_factory, "tohoku-v2")
    (model,) = result["models"]
    assert model["variant"] == "wordpiece"
    assert type(AutoTokenizer.from_pretrained(model["model_dir"])).__name__ == "BertJapaneseTokenizer"
    assert len(commands.fill_mask(model["model_dir"], top_k=3)) == 3
    (trained,) = _manifests(out, "stages")
    assert [s["stage"] for s in trained["stages"]] == [2] and trained["stages"][0]["init_checkpoint"] is None
    downloaded = [m["source_url"] for m in _manifests(out, "source_url")]
    assert downloaded and not any("cc100" in u for u in downloaded), downloaded  # one stage: no CC-100


@pytest.mark.slow
def test_local_yoheikikuta_sp_trains_a_sentencepiece_bert(tmp_path_factory):
    from transformers import AutoTokenizer

    out, result = _run(tmp_path_factory, "yoheikikuta-sp")
    (model,) = result["models"]
    assert model["variant"] == "sentencepiece" and model["model_dir"].split("/")[-1].startswith(
        "bert-tiny-japanese-sentencepiece-")
    tok = AutoTokenizer.from_pretrained(model["model_dir"])
    assert tok.is_fast and tok.mask_token == "[MASK]"
    text = "日本の首都は東京です。"
    assert tok.decode(tok(text.lower())["input_ids"], skip_special_tokens=True).replace(" ", "") == text
    assert len(commands.fill_mask(model["model_dir"], top_k=3)) == 3
    (trained,) = _manifests(out, "stages")
    assert [s["stage"] for s in trained["stages"]] == [1, 2]


def test_a_model_with_a_tokenizer_json_instead_of_vocab_txt_evaluates_and_publishes(tmp_path):
    """SentencePiece and byte models (yoheikikuta-sp) carry tokenizer.json, not vocab.txt."""
    import os

    import torch
    from transformers import AutoTokenizer, BertConfig, BertForPreTraining

    from components import storage
    from components.evaluate.core import load_model
    from components.publish.core import publish_model
    from components.tokenizer.byte import write_byte_tokenizer

    model_dir = str(tmp_path / "converted")
    write_byte_tokenizer(model_dir, mecab_dic="none")
    assert not os.path.exists(os.path.join(model_dir, "vocab.txt"))
    vocab = len(AutoTokenizer.from_pretrained(model_dir))
    torch.manual_seed(0)
    BertForPreTraining(BertConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=32)).save_pretrained(model_dir)
    tokenizer, model = load_model(model_dir)
    assert model.config.vocab_size == len(tokenizer)
    release = publish_model(model_dir, str(tmp_path / "release"), model_name="bert-tiny-japanese-byte", variant="byte")
    assert release and os.path.isfile(tmp_path / "release" / "tokenizer.json")
    storage.remove(os.path.join(model_dir, "tokenizer.json"))
    with pytest.raises(BadInput, match="vocab.txt: missing"):
        load_model(model_dir)
    with pytest.raises(BadInput, match="vocab.txt: missing"):
        publish_model(model_dir, str(tmp_path / "release2"))


@pytest.mark.slow
def test_local_run_of_tohoku_v1_ends_with_an_ipadic_model(tmp_path_factory):
    """The PyTorch-trainer presets' local runs: tests/test_torch_pipeline_local.py."""
    from transformers import AutoTokenizer

    _out, result = _run(tmp_path_factory, "tohoku-v1")
    (found,) = result["models"]
    tok = AutoTokenizer.from_pretrained(found["model_dir"])
    assert len(commands.fill_mask(found["model_dir"], top_k=2)) == 2
    text = "東京は日本の首都です。"
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True).replace(" ", "") == text

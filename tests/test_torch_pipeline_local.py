"""Issue 13, the DAG part: the PyTorch-trainer presets run end to end.

``bertja run --local --recipe modernbert-ja`` (and rinna-roberta, bybert) trains the plan's tiny
model on CPU from the token shards of both corpora, evaluates it on held-out token shards, and
publishes a Hugging Face directory that the plain ``transformers.pipeline("fill-mask")`` answers
with. The step's core (``components.torch_train.step``): content-named, resumable training dirs
and torchrun for more than one process.
"""

import glob
import json
import os

import pytest

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from test_recipes import _manifests  # noqa: E402 (the run's artifact manifests holding a key)
from test_torch_cli import shards  # noqa: E402,F401 (a byte tokenizer and two token-shard dirs)

from components.errors import BadInput  # noqa: E402
from components.torch_train import configs, step  # noqa: E402
from pipelines import commands  # noqa: E402

FAMILY_CLASSES = {"modernbert-ja": "ModernBertForMaskedLM", "rinna-roberta": "RobertaForMaskedLM",
                  "bybert": "EuroBertForMaskedLM"}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILY_CLASSES))
def test_local_run_trains_evaluates_and_publishes_a_fill_mask_model(tmp_path, name):
    out = str(tmp_path / "out")
    result = commands.run_local(out, "local", recipe=name)
    (model,) = result["models"]
    config = json.loads(open(os.path.join(model["model_dir"], "config.json"), encoding="utf-8").read())
    assert config["architectures"] == [FAMILY_CLASSES[name]]
    assert os.path.isfile(os.path.join(model["model_dir"], "tokenizer.json"))  # its tokenizer, no conversion
    fill = transformers.pipeline("fill-mask", model=model["model_dir"], device="cpu")
    answers = fill(f"日本の首都は{fill.tokenizer.mask_token}です。", top_k=3)
    assert len(answers) == 3 and all(0 <= a["score"] <= 1 for a in answers)
    # the plan's stages at the local profile's tiny shape, trained inside the task's output
    (trained,) = _manifests(out, "training_dir")
    plan = configs.plan(name)
    assert trained["architecture"] == f"{configs.ARCHITECTURES[plan.architecture].family}-tiny"
    assert [s["stage"] for s in trained["stages"]] == list(range(1, len(plan.stages) + 1))
    assert all(s["seq_length"] == 128 and s["step"] == 20 for s in trained["stages"])
    assert trained["training_dir"].startswith(os.path.join(out, "pipeline-root"))
    # held-out masked-LM accuracy on token shards (a number, measured on masked tokens)
    (evaluated,) = [m["metrics"] for m in _manifests(out, "metrics") if "masked_lm_accuracy" in m["metrics"]]
    assert evaluated["masked_tokens"] > 0 and 0 <= evaluated["masked_lm_accuracy"] <= 1
    assert not _manifests(out, "source_checkpoint"), "a PyTorch-trained model went through conversion"
    if name == "bybert":  # whole words over bytes: MeCab's words mark the shards
        from components.pretraining_data.shards import read_token_shards

        metas = glob.glob(os.path.join(out, "pipeline-root", "**", "meta.json"), recursive=True)
        shard = read_token_shards(os.path.dirname(metas[0]))
        ids, word_starts = next(iter(shard.iter_documents()))
        assert shard.tokenizer_type == "byte" and len(ids) == len(word_starts) and not all(word_starts)
    if name == "modernbert-ja":  # a retrain on the same data is served from the cache, training included
        again = commands.run_local(out, "local", recipe=name)
        assert not any(r.ran for r in again["tasks"] if r.name.startswith(("train-torch", "pretraining-data")))
        assert again["models"] == result["models"]


def test_tiny_is_the_plans_family_and_names_are_checked():
    assert step.resolve_architecture("modernbert-ja", "tiny") == "modernbert-tiny"
    assert step.resolve_architecture("bybert", "") == "eurobert-base"
    assert step.resolve_architecture("bybert", "bert-tiny") == "bert-tiny"
    with pytest.raises(BadInput, match="architecture"):
        step.resolve_architecture("bybert", "huge")
    assert step.per_stage([]) is None and step.per_stage([64]) == 64 and step.per_stage([64, 128]) == [64, 128]


def _train(tmp_path, tokenizer, dirs, root, **kw):
    args = dict(variant="byte", plan="bybert", architecture="tiny", shard_dirs=dirs, tokenizer_dir=tokenizer,
                training_root=str(root), fallback_root=str(tmp_path / "unused"), seq_lengths=[64],
                train_steps=[3], global_batch_size=4, micro_batch_size=2, workers=0, seed=1)
    return step.train_step(**{**args, **kw})


def test_training_dir_is_named_by_content_and_a_rerun_resumes_there(tmp_path, shards):  # noqa: F811
    tokenizer, dirs = shards
    root = tmp_path / "bertja-training"
    first = _train(tmp_path, tokenizer, dirs, root)
    assert first["training_dir"].startswith(str(root)) and os.path.basename(first["training_dir"]).startswith(
        "eurobert-tiny-byte-")
    assert os.path.isfile(os.path.join(first["training_dir"], "inputs.json"))
    assert not os.path.exists(tmp_path / "unused")
    # the same inputs (shards listed in another order): the same dir, its stage found trained
    again = _train(tmp_path, tokenizer, list(reversed(dirs)), root)
    assert again["training_dir"] == first["training_dir"] and again["stages"][0]["loss"] == first["stages"][0]["loss"]
    assert again["seq_length"] == 64 and again["mask_rate"] == configs.plan("bybert").stages[-1].mask_rate
    # other steps: another dir; no root: inside the task's output
    other = _train(tmp_path, tokenizer, dirs, root, train_steps=[2])
    assert other["training_dir"] != first["training_dir"]
    inside = _train(tmp_path, tokenizer, dirs, "", fallback_root=str(tmp_path / "output"))
    assert inside["training_dir"] == str(tmp_path / "output") and inside["training_key"] is None
    assert os.path.isfile(os.path.join(inside["hf_dir"], "model.safetensors"))


def test_a_length_the_architecture_cannot_take_fails_before_training(tmp_path, shards):  # noqa: F811
    tokenizer, dirs = shards
    with pytest.raises(BadInput, match="exceeds roberta-tiny"):
        _train(tmp_path, tokenizer, dirs, tmp_path / "r", plan="rinna-roberta", seq_lengths=[1024])
    assert not (tmp_path / "r").exists()
    with pytest.raises(BadInput, match="processes"):
        _train(tmp_path, tokenizer, dirs, tmp_path / "r", processes=0)


def test_torchrun_argv_is_a_list_with_every_stage_spelled_out():
    stages = configs.plan_stages("modernbert-ja", seq_lengths=64, train_steps=4, global_batch_size=8)
    argv = step.torchrun_argv(2, plan="modernbert-ja", architecture="modernbert-tiny", model_dir="gs://b/d; rm",
                              tokenizer_dir="/t", shard_dirs=["/a", "/b"], stages=stages, micro_batch_size=2, seed=3,
                              workers=0)
    assert argv[1:7] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m"]
    assert argv[argv.index("--model-dir") + 1] == "gs://b/d; rm"  # one argument, never a shell word
    assert argv[argv.index("--seq-length") + 1] == "64,64,64" and argv[argv.index("--data") + 1] == "/a,/b"


@pytest.mark.slow
def test_two_processes_run_under_torchrun_spawned_by_the_step(tmp_path, shards):  # noqa: F811
    """processes=2: the core starts torchrun (gloo on CPU) and reads the result the ranks leave."""
    tokenizer, dirs = shards
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    result = _train(tmp_path, tokenizer, dirs, tmp_path / "root", processes=2)
    assert result["finished"] and os.path.isfile(os.path.join(result["hf_dir"], "model.safetensors"))
    assert json.load(open(os.path.join(result["training_dir"], "inputs.json")))["processes"] == 2


def test_held_out_token_shards_evaluate_a_pytorch_trained_model(tmp_path, shards):  # noqa: F811
    """evaluate_model on the trainer's Hugging Face dir: fill-mask and masked-LM accuracy on token shards,
    masked at a fixed seed (two evaluations score the same tokens); a length is required."""
    from components.evaluate.core import evaluate_model

    tokenizer, dirs = shards
    trained = _train(tmp_path, tokenizer, dirs, "", fallback_root=str(tmp_path / "model"))
    runs = [evaluate_model(trained["hf_dir"], output_dir=str(tmp_path / f"eval{i}"), eval_data=dirs[:1],
                           seq_length=64, mask_rate=0.15) for i in range(2)]
    metrics = runs[0]["metrics"]
    assert metrics["masked_tokens"] > 0 and 0 <= metrics["masked_lm_accuracy"] <= 1
    assert runs[1]["metrics"] == metrics and "next_sentence_accuracy" not in metrics
    assert len(runs[0]["fill_mask"][0]["predictions"]) == 5
    with pytest.raises(BadInput, match="seq_length"):
        evaluate_model(trained["hf_dir"], output_dir=str(tmp_path / "bad"), eval_data=dirs[:1])

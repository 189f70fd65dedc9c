"""The whole DAG under kfp.local on the bundled sample corpus, twice.

The first run must leave a Hugging Face model that transformers loads and that
answers a fill-mask query; the second run must be served from the cache: every
task's outputs are the first run's artifacts (a task that re-ran would have
written new ones under the second run's directory).
"""

import os

import pytest

from pipelines import commands

pytestmark = pytest.mark.slow

# Even smaller than the local profile, so the suite stays quick; same DAG.
TINY = {"stage1_train_steps": 12, "stage2_train_steps": 8, "stage2_max_seq_length": 128,
        "stage2_max_predictions": 19, "stage1_dupe_factor": 1, "stage2_dupe_factor": 1}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("local-run")
    first = commands.run_local(str(out), "local", dict(TINY))
    second = commands.run_local(str(out), "local", dict(TINY))
    return out, first, second


def test_local_run_leaves_a_model_transformers_loads_and_that_answers_fill_mask(two_runs):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    _out, first, _second = two_runs
    (model,) = first["models"]
    assert model["variant"] == "wordpiece"
    model_dir = model["model_dir"]
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json", "README.md"):
        assert os.path.isfile(os.path.join(model_dir, name)), name
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert type(tok).__name__ == "BertJapaneseTokenizer"
    AutoModelForMaskedLM.from_pretrained(model_dir)
    answers = commands.fill_mask(model_dir, top_k=3)
    assert len(answers) == 3 and all(a["token"] for a in answers)
    assert abs(sum(a["score"] for a in answers)) <= 1.0 + 1e-6


def test_second_run_is_served_from_the_cache(two_runs):
    out, first, second = two_runs
    # the second run points at the model the first run published
    assert second["models"] == first["models"]
    assert os.path.dirname(first["models"][0]["model_dir"]) == os.path.join(out, "models")
    runs = sorted(d for d in os.listdir(os.path.join(out, "pipeline-root")) if not d.startswith("."))
    assert len(runs) == 2, runs
    second_run_dir = os.path.join(out, "pipeline-root", runs[1])
    ran = sorted(os.listdir(second_run_dir))
    # only source and JGLUE identities and the exit task (never cached) run again; every other step is a cache hit
    assert ran == ["jglue-identity", "release-compute", "resolve-sources"], ran

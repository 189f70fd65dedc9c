"""The whole DAG under kfp.local on the bundled sample corpus, twice.

The first run must leave a Hugging Face model that transformers loads and that
answers a fill-mask query; the second run must be served from the cache: every
task's outputs are the first run's artifacts (a task that re-ran would have
written new ones under the second run's directory). What the run prints: one line
per task, the executor logs in a file, a failing task's log tail.
"""

import inspect
import io
import os
import re
import sys

import pytest
import yaml

from pipelines import commands, local_run

slow = pytest.mark.slow
LINE = re.compile(r"^(?P<name>\S+)\s+(?P<state>ran|cached|FAILED)\s+(?P<seconds>[\d.]+)s(?:\s+(?P<figure>.*))?$")

# Even smaller than the local profile, so the suite stays quick; same DAG.
TINY = {"stage1_train_steps": 12, "stage2_train_steps": 8, "stage2_max_seq_length": 128,
        "stage2_max_predictions": 19, "stage1_dupe_factor": 1, "stage2_dupe_factor": 1}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("local-run")
    first_out, second_out = io.StringIO(), io.StringIO()
    first = commands.run_local(str(out), "local", dict(TINY), out=first_out)
    second = commands.run_local(str(out), "local", dict(TINY), out=second_out)
    first["printed"], second["printed"] = first_out.getvalue(), second_out.getvalue()
    return out, first, second


def task_lines(printed: str) -> list[dict]:
    """The per-task lines of what run_local printed (every line after the log path)."""
    head, *rest = printed.splitlines()
    assert head.startswith("executor logs: "), head
    parsed = [LINE.match(line) for line in rest]
    assert all(parsed), [line for line, m in zip(rest, parsed) if not m]
    return [m.groupdict() for m in parsed]


@pytest.fixture(scope="module")
def compiled_tasks(tmp_path_factory):
    """Executor task name -> whether it is cacheable, over every DAG of the compiled pipeline."""
    path = tmp_path_factory.mktemp("compiled") / "pipeline.yaml"
    commands.compile_pipeline(str(path), "local", dict(TINY))
    spec = yaml.safe_load(path.read_text())
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    found = {}
    for dag in dags:
        for name, task in dag["tasks"].items():
            if "executorLabel" in spec["components"][task["componentRef"]["name"]]:
                found[name] = bool((task.get("cachingOptions") or {}).get("enableCache"))
    return found


@slow
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


@slow
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


def _task_dirs(run_dir: str) -> list[str]:
    """The task directories kfp.local made for a run (loop iterations hold their own)."""
    found = []
    for name in sorted(os.listdir(run_dir)):
        path = os.path.join(run_dir, name)
        found += _task_dirs(path) if re.fullmatch(r"for-loop-\d+-iteration-\d+", name) else [name]
    return found


@slow
def test_one_line_per_task_that_ran_with_its_figure(two_runs, compiled_tasks):
    out, first, _second = two_runs
    lines = task_lines(first["printed"])
    run_dir = os.path.join(out, "pipeline-root", sorted(os.listdir(os.path.join(out, "pipeline-root")))[0])
    assert len(lines) == len(_task_dirs(run_dir)) == len(first["tasks"]) > 20
    assert {line["state"] for line in lines} == {"ran"}
    names = {re.sub(r"\[.*\]$", "", line["name"]) for line in lines}
    assert names <= set(compiled_tasks), names - set(compiled_tasks)
    assert sorted(names) == sorted(set(_task_dirs(run_dir)))
    figures = {line["name"]: line["figure"] or "" for line in lines}
    assert re.fullmatch(r"vocab [\d,]+", figures["wordpiece-tokenizer"])
    assert re.fullmatch(r"[\d,]+ sentences from [\d,]+ pages", figures["wiki-corpus"])
    assert re.fullmatch(r"stage 2 loss \d+\.\d{3}", figures["train-model"])
    assert re.fullmatch(r"masked-LM accuracy [01]\.\d{3}", figures["evaluate-model"])
    loops = [n for n in figures if n.startswith("pretraining-data")]
    assert loops and all(re.fullmatch(r"corpus_\d+\.txt: [\d,]+ instances", figures[n]) for n in loops), figures


@slow
def test_executor_logs_go_to_the_file_not_the_output(two_runs):
    out, first, _second = two_runs
    assert os.path.dirname(first["log"]) == os.path.join(out, "logs")
    assert first["printed"].splitlines()[0] == f"executor logs: {first['log']}"
    with open(first["log"], encoding="utf-8") as f:
        logs = re.sub(r"\x1b\[[0-9;]*m", "", f.read())  # kfp.local colours task names
    for record in first["tasks"]:  # each task's kfp.local log and its executor's own lines
        assert f"Executing task {record.name.split('[')[0]!r}" in logs, record.name
    assert logs.count("[KFP Executor") >= len(first["tasks"])
    assert "[KFP Executor" not in first["printed"] and "Streamed logs" not in first["printed"]
    assert len(first["printed"].splitlines()) == len(first["tasks"]) + 1


@slow
def test_cached_rerun_says_cached_for_every_cacheable_task(two_runs, compiled_tasks):
    _out, first, second = two_runs
    lines = task_lines(second["printed"])
    assert sorted(line["name"] for line in lines) == sorted(line["name"] for line in task_lines(first["printed"]))
    for line in lines:
        cacheable = compiled_tasks[re.sub(r"\[.*\]$", "", line["name"])]
        assert line["state"] == ("cached" if cacheable else "ran"), line
    assert {line["name"] for line in lines if line["state"] == "ran"} == {
        "resolve-sources", "jglue-identity", "release-compute"}


@slow
def test_summary_ends_with_model_fill_mask_and_metrics_and_caches_the_answer(two_runs, tmp_path):
    _out, first, second = two_runs
    cache = str(tmp_path / "fill-mask")
    text = commands.run_summary(first, cache)
    model_dir = first["models"][0]["model_dir"]
    assert f"Hugging Face model (wordpiece): {model_dir}" in text
    assert re.search(r"fill-mask '日本の首都は\[MASK\]です。': .+ \(0\.\d{3}\)", text)
    assert "(cached" not in text
    assert re.search(r"^evaluate-model\s+masked_lm_accuracy\s+[\d.]+$", text, re.M)
    assert re.search(r"^train-model\s+stage2_loss\s+[\d.]+$", text, re.M)
    again = commands.run_summary(second, cache)
    assert "(cached: same model files)" in again
    assert again.split("fill-mask")[1].split(" (cached")[0] == text.split("fill-mask")[1].split("\n")[0]
    # the cached answer is the one the model gives
    answers = commands.fill_mask(model_dir)
    assert ", ".join(f"{r['token']} ({r['score']:.3f})" for r in answers) in again


def test_a_failing_task_shows_its_log_tail_and_the_log_path(tmp_path):
    printed = io.StringIO()
    with pytest.raises(commands.PipelineFailed, match=r"task resolve-sources failed; full executor logs: .*\.log"):
        commands.run_local(str(tmp_path), "local", {**TINY, "wikipedia_dump_date": "20990101"}, out=printed)
    text = printed.getvalue()
    assert "resolve-sources" in text and re.search(r"^resolve-sources\s+FAILED", text, re.M)
    tail = text.split("--- resolve-sources: last 40 log lines ---\n", 1)[1].splitlines()
    assert 1 < len(tail) <= 41
    assert any("wikipedia_dump_date='20990101': not in" in line for line in tail)


def test_kfp_local_internals_the_run_report_hooks():
    """pipelines.local_run replaces two module attributes for the run: pin that kfp.local still
    calls them through the module, with the parameters the hook reads."""
    from kfp.local import task_dispatcher
    from kfp.local.orchestrator import dag_orchestrator, enhanced_dag_orchestrator, task_executor

    params = inspect.signature(task_executor.execute_single_task).parameters
    assert {"task_name", "task_spec", "pipeline_resource_name"} <= set(params)
    assert "task_executor.execute_single_task(" in inspect.getsource(enhanced_dag_orchestrator)
    assert "task_executor.execute_single_task(" in inspect.getsource(dag_orchestrator)
    source = inspect.getsource(task_executor.execute_single_task)
    # a cache hit returns before the task is dispatched: the dispatch is what "ran" means
    assert source.index("cache hit") < source.index("task_dispatcher.run_single_task_implementation(")
    # kfp.local logs through a StreamHandler on sys.stdout made per task, executors through print
    from kfp.local import logging_utils, subprocess_task_handler
    assert "logging.StreamHandler(sys.stdout)" in inspect.getsource(logging_utils.local_logger_context)
    assert "print(line" in inspect.getsource(subprocess_task_handler.run_local_subprocess)
    assert task_dispatcher.run_single_task_implementation.__module__ == "kfp.local.task_dispatcher"


def test_display_name_and_key_figure_from_outputs(tmp_path):
    from kfp import dsl

    assert local_run.display_name("pretraining-data", "p-1/for-loop-2-iteration-1") == "pretraining-data[for-loop-2#1]"
    assert local_run.display_name("alphabet", "bert-japanese-pretraining-1") == "alphabet"
    tok = dsl.Model(name="tokenizer", uri=str(tmp_path), metadata={"subword": "wordpiece"})
    (tmp_path / "manifest.json").write_text('{"stats": {"vocab_size": 32768}}')
    record = local_run.TaskRecord("variant-tokenizer-2", "variant-tokenizer-2", ran=False, seconds=0.01, ok=True,
                                  outputs={"tokenizer": tok})
    assert local_run.task_line(record) == f"{'variant-tokenizer-2':<34} cached    0.0s  vocab 32,768"
    metrics = dsl.Metrics(name="metrics", uri=str(tmp_path / "m"), metadata={"stage1_loss": 7.5, "stage2_loss": 6.25})
    record = local_run.TaskRecord("train-model", "train-model", ran=True, seconds=3.0, ok=True,
                                  outputs={"metrics": metrics})
    assert local_run.key_figure(record) == "stage 2 loss 6.250"
    assert local_run.metrics_rows([record]) == [("train-model", "stage1_loss", "7.5"),
                                                ("train-model", "stage2_loss", "6.25")]
    failed = local_run.TaskRecord("train-model", "train-model", ran=True, seconds=1.0, ok=False)
    assert local_run.task_line(failed).split() == ["train-model", "FAILED", "1.0s"]
    # an unknown step: its first output parameter
    other = local_run.TaskRecord("variants-selected-3", "variants-selected-3", ok=True, outputs={"Output": False})
    assert local_run.key_figure(other) == "False"


def test_handlers_made_on_the_captured_output_are_dropped_after_the_run(tmp_path):
    """A step run in this process may call logging.basicConfig while stdout is the run's log file;
    after the run that handler would write to a closed file ('--- Logging error ---' in later
    commands, e.g. bertja schedule in the same process)."""
    import logging

    from pipelines import local_run

    before = list(logging.getLogger().handlers)
    with local_run.capture(str(tmp_path / "logs" / "run.log"), []):
        made = logging.StreamHandler(sys.stdout)  # what basicConfig does inside the run
        logging.getLogger().addHandler(made)
        logging.getLogger("bertja.test").addHandler(logging.StreamHandler(sys.stdout))
    assert logging.getLogger().handlers == before
    assert not logging.getLogger("bertja.test").handlers

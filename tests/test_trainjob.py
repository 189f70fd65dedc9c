"""TrainJob control: the real ``kubeflow`` client (TrainerClient, Kubernetes backend) against a
local stand-in of the Kubernetes API (tests/fake_k8s_api.py); the manifest checked with
``kubeflow-trainer-api``'s models; the CLI's exit statuses; the KFP components compiled."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("kubeflow.trainer")
pytest.importorskip("kubeflow_trainer_api")

from components import storage  # noqa: E402
from components.errors import BadInput  # noqa: E402
from components.torch_train import trainjob  # noqa: E402
from components.torch_train.trainjob import JobSpec, TrainJobControl, TrainJobError, TrainJobFailed  # noqa: E402
from fake_k8s_api import FakeKubernetesApi  # noqa: E402
from fake_kfp_api import FakeKfpApi  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NS = "team-a"
TRAINJOBS = rf"/apis/trainer\.kubeflow\.org/v1alpha1/namespaces/{NS}/trainjobs"


@pytest.fixture
def k8s():
    api = FakeKubernetesApi(phase_s=0.25).start()
    yield api
    api.stop()


def control(k8s, poll_s: float = 0.05) -> TrainJobControl:
    return TrainJobControl(NS, api_server=k8s.endpoint, poll_s=poll_s)


def spec(name: str = "bj-run-1-base-1234abcd", **kw) -> JobSpec:
    command = trainjob.trainer_command(plan="modernbert-ja", data=["gs://b/shards/0", "gs://b/shards/1"],
                                       model_dir="gs://b/model", tokenizer_dir="gs://b/tok",
                                       options={"architecture": "modernbert-130m", "seq-length": [1024, 8192]})
    values = dict(name=name, image="registry.example/bertja-train-gpu:1.0", command=tuple(command), num_nodes=2,
                  gpus_per_node=8, cpu="32", memory="200Gi", labels=trainjob.run_labels("Run-1", "base", "kfp"),
                  node_selector={"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
                  tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},),
                  service_account="trainer", env={"NCCL_DEBUG": "WARN"}, active_deadline_s=86400)
    values.update(kw)
    return JobSpec(**values)


def bertja(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def refused(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and "error:" in result.stderr, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr[-2000:])


# ---------------------------------------------------------------------------
# Names and the manifest
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("run_id", ["3f2c9a1e-7b4d-4e0a-9c1b-2d5e6f7a8b9c", "RUN_ID.With Dots", "-x-",
                                    "a" * 200, "9start-with-digit"])
def test_names_are_deterministic_short_dns_labels(run_id):
    name = trainjob.trainjob_name(run_id, "large_character")
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= trainjob.MAX_NAME <= 63
    assert trainjob.check_name(name) == name
    assert name == trainjob.trainjob_name(run_id, "large_character")
    assert name != trainjob.trainjob_name(run_id, "large_wordpiece")
    # two ids that share the kept prefix still differ (the hash covers the whole id)
    assert trainjob.trainjob_name("a" * 200 + "1", "v") != trainjob.trainjob_name("a" * 200 + "2", "v")


def test_the_manifest_round_trips_through_the_models_and_carries_every_setting():
    s = spec().checked()
    manifest = trainjob.build_manifest(s)
    assert trainjob.validate_manifest(manifest) is manifest
    trainer = manifest["spec"]["trainer"]
    assert trainer["command"][:6] == ["torchrun", "--no-python", "bertja", "train", "--engine", "torch"]
    assert trainer["command"][trainer["command"].index("--seq-length") + 1] == "1024,8192"
    assert trainer["numNodes"] == 2 and trainer["image"].endswith("bertja-train-gpu:1.0")
    assert trainer["resourcesPerNode"]["limits"] == {"cpu": "32", "memory": "200Gi", "nvidia.com/gpu": "8"}
    assert trainer["resourcesPerNode"]["requests"] == trainer["resourcesPerNode"]["limits"]
    labels = manifest["metadata"]["labels"]
    assert labels["bertja-run"] == "run-1" and labels["bertja-variant"] == "base"
    assert labels["app.kubernetes.io/managed-by"] == "bertja"
    (patch,) = manifest["spec"]["runtimePatches"]
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = node["template"]["spec"]["template"]["spec"]
    assert node["name"] == "node" and pod["serviceAccountName"] == "trainer"
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert manifest["spec"]["activeDeadlineSeconds"] == 86400


@pytest.mark.parametrize("where, field, value", [
    (("spec", "trainer"), "numProcsPerNode", 4),  # a typo of numProcPerNode
    (("spec",), "suspended", True),  # the field is "suspend"
    (("spec", "runtimeRef"), "namespace", "x"),
])
def test_a_field_the_model_does_not_know_is_caught_not_dropped(where, field, value):
    manifest = trainjob.build_manifest(spec().checked())
    target = manifest
    for key in where:
        target = target[key]
    target[field] = value
    with pytest.raises(BadInput, match=re.escape(".".join(("", *where, field))) + ": dropped"):
        trainjob.validate_manifest(manifest)


def test_a_mistyped_value_is_bad_input():
    manifest = trainjob.build_manifest(spec().checked())
    manifest["spec"]["trainer"]["numNodes"] = "2"
    with pytest.raises(BadInput, match="numNodes"):
        trainjob.validate_manifest(manifest)


@pytest.mark.parametrize("change, fragment", [
    ({"name": "Bad_Name"}, "--name"), ({"name": "b" * 50}, "--name"), ({"num_nodes": 0}, "--num-nodes"),
    ({"gpus_per_node": -1}, "--gpus-per-node"), ({"cpu": "lots"}, "--cpu"), ({"memory": "1 Gi"}, "--memory"),
    ({"image": ""}, "--image"), ({"command": ()}, "command"), ({"runtime": "Torch"}, "--runtime"),
    ({"labels": {"bertja-run": "-x"}}, "labels"), ({"env": {"1BAD": "x"}}, "--env"),
    ({"tolerations": ({"keys": "x"},)}, "--tolerations"), ({"service_account": "Admin"}, "--service-account"),
])
def test_a_bad_spec_is_refused_before_any_request(change, fragment):
    with pytest.raises(BadInput, match=re.escape(fragment)):
        spec(**change).checked()


def test_trainer_paths_must_be_single_directories_and_the_plan_known():
    with pytest.raises(BadInput, match="--plan 'modernbert'"):
        trainjob.trainer_command(plan="modernbert", data=["gs://b/a"], model_dir="gs://b/m", tokenizer_dir="gs://b/t")
    with pytest.raises(BadInput, match="--data"):
        trainjob.trainer_command(plan="bert", data=["gs://b/a,gs://b/c"], model_dir="gs://b/m",
                                 tokenizer_dir="gs://b/t")
    with pytest.raises(BadInput, match="--model-dir"):
        trainjob.trainer_command(plan="bert", data=["gs://b/a"], model_dir="--rm", tokenizer_dir="gs://b/t")


# ---------------------------------------------------------------------------
# The lifecycle with the real client
# ---------------------------------------------------------------------------

def test_create_follow_delete_with_the_kubeflow_client(k8s, capfd):
    c = control(k8s)
    s = spec()
    c.create(s)
    # what the client sent is exactly the manifest that was checked
    (body,) = k8s.created_bodies
    assert body == trainjob.build_manifest(s.checked())
    # the client read the trainer's ConfigMap, looked for a namespaced runtime, then the cluster one
    assert k8s.paths("GET", r"/api/v1/namespaces/kubeflow-system/configmaps/kubeflow-trainer-public$") == [200]
    assert k8s.paths("GET", rf"/namespaces/{NS}/trainingruntimes/torch-distributed$")[0] == 404
    assert k8s.paths("GET", r"/clustertrainingruntimes/torch-distributed$")[0] == 200
    assert k8s.paths("POST", TRAINJOBS + "$") == [201]

    result = c.follow(s.name, timeout_s=30)
    assert result["state"] == "Complete" and "JobSetCompleted" in result["message"]
    assert result["nodes"] == {"node-0": "Succeeded", "node-1": "Succeeded"}
    assert k8s.paths("GET", rf"/api/v1/namespaces/{NS}/pods$")  # node states through the client's get_job
    err = capfd.readouterr().err
    assert re.search(rf"TrainJob {NS}/{s.name}: Created; nodes node-0=Pending, node-1=Pending; elapsed 0m0\ds", err)
    assert "Running; nodes node-0=Running, node-1=Running" in err and "Complete (JobSetCompleted" in err

    assert c.delete(s.name) is True
    assert c.get(s.name) is None
    assert c.delete(s.name) is False  # gone already: fine
    assert k8s.paths("DELETE", TRAINJOBS + f"/{s.name}$") == [200, 404]


def test_a_failed_job_raises_with_its_condition_and_the_first_nodes_log(k8s, capfd):
    c = control(k8s)
    s = spec()
    k8s.outcomes[s.name] = ("Failed", "JobSetFailed", "job node-0 failed: exit code 1")
    k8s.logs[s.name] = "step 10 loss 9.1\nRuntimeError: CUDA out of memory\n"
    c.create(s)
    with pytest.raises(TrainJobFailed, match=r"failed after .*JobSetFailed: job node-0 failed: exit code 1"):
        c.follow(s.name, timeout_s=30)
    err = capfd.readouterr().err
    assert "last lines of node-0:" in err and "CUDA out of memory" in err
    assert k8s.paths("GET", rf"/pods/{s.name}-node-0-0-[a-z0-9]+/log$") == [200]


def test_the_job_is_deleted_whatever_ends_the_follow(k8s, tmp_path):
    c = control(k8s)
    failing = spec(name="bj-fails")
    k8s.outcomes[failing.name] = ("Failed", "DeadlineExceeded", "active deadline reached")
    with pytest.raises(TrainJobFailed, match="DeadlineExceeded"):
        trainjob.train_on_trainjob(c, failing, model_dir=str(tmp_path / "m"))
    assert failing.name not in {k[1] for k in k8s.jobs}
    assert k8s.paths("DELETE", TRAINJOBS + "/bj-fails$") == [200]

    slow = spec(name="bj-slow")  # still running when the follow gives up
    with pytest.raises(TrainJobError, match="not finished after"):
        trainjob.train_on_trainjob(c, slow, model_dir=str(tmp_path / "m"), timeout_s=0.1)
    assert k8s.paths("DELETE", TRAINJOBS + "/bj-slow$") == [200] and not k8s.jobs

    k8s.fail_next.append(("GET", rf"{TRAINJOBS}/bj-broken$", 500))  # the API fails mid-follow
    with pytest.raises(TrainJobError, match="HTTP 500"):
        trainjob.train_on_trainjob(c, spec(name="bj-broken"), model_dir=str(tmp_path / "m"))
    assert not k8s.jobs


def test_a_completed_job_without_a_model_is_an_error_and_with_one_returns_it(k8s, tmp_path):
    c = control(k8s)
    with pytest.raises(TrainJobError, match="holds no model"):
        trainjob.train_on_trainjob(c, spec(name="bj-empty"), model_dir=str(tmp_path / "empty"))

    def trainer_wrote(job):  # what rank 0 writes at the end, to the --model-dir of the command
        argv = job["spec"]["trainer"]["command"]
        storage.write_text(storage.join(argv[argv.index("--model-dir") + 1], "hf", "config.json"), "{}")

    k8s.on_complete = trainer_wrote
    model_dir = str(tmp_path / "model")
    s = spec(name="bj-ok", command=tuple(trainjob.trainer_command(plan="bert", data=[str(tmp_path / "d")],
                                                                  model_dir=model_dir, tokenizer_dir="t")))
    result = trainjob.train_on_trainjob(c, s, model_dir=model_dir)
    assert result["state"] == "Complete" and result["hf_dir"] == storage.join(model_dir, "hf")
    assert not k8s.jobs


def test_delete_waits_for_a_finalizer_and_fails_loudly_on_an_api_error(k8s):
    c = control(k8s)
    c.create(spec(name="bj-final"))
    k8s.delete_lag = 3
    assert c.delete("bj-final") is True
    assert k8s.paths("GET", TRAINJOBS + "/bj-final$")[-4:] == [200, 200, 200, 404]
    c.create(spec(name="bj-locked"))
    k8s.fail_next.append(("DELETE", TRAINJOBS + "/bj-locked$", 500))
    with pytest.raises(TrainJobError, match="delete failed: .*HTTP 500"):
        c.delete("bj-locked")


def test_a_retried_task_adopts_a_live_job_and_replaces_a_failed_one(k8s):
    c = control(k8s, poll_s=0.02)
    s = spec(name="bj-retry")
    c.create(s)
    c.create(s)  # the same name again: adopted, no second POST
    assert k8s.paths("POST", TRAINJOBS + "$") == [201]
    k8s.outcomes[s.name] = ("Failed", "JobSetFailed", "node lost")
    with pytest.raises(TrainJobFailed):
        c.follow(s.name, timeout_s=30)
    c.create(s)  # failed: deleted, created again
    assert k8s.paths("DELETE", TRAINJOBS + "/bj-retry$") == [200]
    assert k8s.paths("POST", TRAINJOBS + "$") == [201, 201]


def test_a_missing_or_builtin_runtime_is_bad_input(k8s):
    from fake_k8s_api import torch_runtime

    c = control(k8s)
    with pytest.raises(BadInput, match="--runtime 'jax-distributed': no TrainingRuntime"):
        c.create(spec(runtime="jax-distributed"))
    k8s.runtimes["torchtune-llama"] = torch_runtime("torchtune-llama", framework="torchtune")
    with pytest.raises(BadInput, match="built-in trainer"):
        c.create(spec(runtime="torchtune-llama"))
    assert not k8s.paths("POST", TRAINJOBS + "$")


def test_train_variant_names_labels_and_reads_the_trainers_metrics(k8s, gcs, tmp_path):
    model_dir = f"{gcs}/runs/base/model"

    def trainer_wrote(job):
        storage.write_text(f"{model_dir}/hf/config.json", "{}")
        storage.write_text(f"{model_dir}/status/complete.json", json.dumps(
            {"architecture": "modernbert-130m", "stages": [{"stage": 1, "loss": 3.5, "tokens_per_sec": 1e5}]}))

    k8s.on_complete = trainer_wrote
    env = {"BERTJA_RUN_ID": "3f2c9a1e-RUN"}
    kw = dict(variant="base", plan="modernbert-ja", data=[f"{gcs}/shards/0"], tokenizer_dir=f"{gcs}/tok",
              model_dir=model_dir, image="img:1", num_nodes=2, gpus_per_node=1, environ=env)
    result = trainjob.train_variant(control(k8s), **kw)
    name = trainjob.trainjob_name("3f2c9a1e-RUN", "base")
    assert result["name"] == name and result["architecture"] == "modernbert-130m"
    assert result["stages"][0]["loss"] == 3.5 and result["hf_dir"] == f"{model_dir}/hf"
    (body,) = k8s.created_bodies
    assert body["metadata"]["labels"]["bertja-run"] == "3f2c9a1e-run"
    assert body["metadata"]["labels"]["bertja-backend"] == "kfp"
    assert not k8s.jobs

    with pytest.raises(BadInput, match="model_dir .*gs://"):
        trainjob.train_variant(control(k8s), **{**kw, "model_dir": str(tmp_path)})
    with pytest.raises(BadInput, match="no run id"):
        trainjob.train_variant(control(k8s), **{**kw, "environ": {}})


def test_release_run_deletes_every_variants_job(k8s, monkeypatch):
    monkeypatch.delenv("BERTJA_RUN_ID", raising=False)
    monkeypatch.delenv("VERTEX_AI_PIPELINES_RUN_LABELS", raising=False)
    c = control(k8s)
    c.create(spec(name=trainjob.trainjob_name("run-9", "base")))
    released = trainjob.release_run(c, run_id="run-9", variants=["base", "large"])
    assert [r["deleted"] for r in released] == [True, False] and not k8s.jobs


def test_gc_deletes_jobs_of_finished_or_vanished_runs_only(k8s):
    kfp = FakeKfpApi()
    try:
        kfp.add_run("run-done", "SUCCEEDED")
        kfp.add_run("run-live", "RUNNING")
        c = control(k8s)
        for run in ("run-done", "run-live", "run-gone"):
            c.create(spec(name=trainjob.trainjob_name(run, "base"), labels=trainjob.run_labels(run, "base", "kfp")))
        c.create(spec(name="bj-local", labels=trainjob.run_labels("run-x", "base", "local")))
        summary = trainjob.collect(c, kfp_endpoint=kfp.endpoint, min_age_s=0)
        assert sorted(d["name"] for d in summary["deleted"]) == sorted(
            trainjob.trainjob_name(r, "base") for r in ("run-done", "run-gone"))
        assert [k["name"] for k in summary["kept"]] == [trainjob.trainjob_name("run-live", "base")]
        assert summary["checked"] == 3 and not summary["errors"]
        assert {k[1] for k in k8s.jobs} == {trainjob.trainjob_name("run-live", "base"), "bj-local"}
    finally:
        kfp.stop()


# ---------------------------------------------------------------------------
# CLI and components
# ---------------------------------------------------------------------------

SPEC_ARGS = ["--image", "img:1", "--plan", "bert", "--data", "gs://b/d", "--model-dir", "gs://b/m",
             "--tokenizer-dir", "gs://b/t"]


def test_cli_train_runs_the_whole_lifecycle(k8s, tmp_path):
    model_dir = tmp_path / "model"
    k8s.on_complete = lambda job: storage.write_text(str(model_dir / "hf" / "config.json"), "{}")
    args = ["--image", "img:1", "--plan", "bert", "--data", "gs://b/d", "--model-dir", str(model_dir),
            "--tokenizer-dir", "gs://b/t"]
    result = bertja("trainjob", "train", "--api-server", k8s.endpoint, "--namespace", NS, "--poll", "0.05",
                    "--run-id", "cli-run", "--variant", "base", "--num-nodes", "2", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout)
    assert out["state"] == "Complete" and out["name"] == trainjob.trainjob_name("cli-run", "base")
    assert not k8s.jobs and "deleted" in result.stderr

    k8s.outcomes["bj-cli-fail"] = ("Failed", "JobSetFailed", "boom")
    result = bertja("trainjob", "train", "--api-server", k8s.endpoint, "--namespace", NS, "--poll", "0.05",
                    "--name", "bj-cli-fail", *args)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("bertja trainjob: error: TrainJob team-a/bj-cli-fail failed")
    assert not k8s.jobs

    result = bertja("trainjob", "delete", "--api-server", k8s.endpoint, "--namespace", NS, "--name", "bj-none")
    assert result.returncode == 0 and json.loads(result.stdout)["deleted"] is False


@pytest.mark.parametrize("args, fragment", [
    (["manifest", "--name", "Bad", *SPEC_ARGS], "--name 'Bad'"),
    (["manifest", "--name", "bj-a", "--num-nodes", "0", *SPEC_ARGS], "--num-nodes 0"),
    (["manifest", "--name", "bj-a", "--cpu", "two", *SPEC_ARGS], "--cpu 'two'"),
    (["manifest", *SPEC_ARGS], "--name or --run-id"),
    (["delete", "--name", "bj-a", "--namespace", "Team_A", "--api-server", "http://127.0.0.1:9"], "--namespace"),
    (["follow", "--name", "bj-a", "--api-server", "localhost:80"], "--api-server"),
])
def test_cli_bad_input_exits_2_naming_the_parameter(args, fragment):
    refused(bertja("trainjob", *args), fragment)


def test_cli_validate_catches_an_unknown_field_and_a_missing_runtime_is_exit_2(k8s, tmp_path):
    manifest = trainjob.build_manifest(spec().checked())
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(manifest))
    assert bertja("trainjob", "validate", good).returncode == 0
    manifest["spec"]["trainer"]["resourcePerNode"] = manifest["spec"]["trainer"].pop("resourcesPerNode")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(manifest))
    refused(bertja("trainjob", "validate", bad), str(bad), ".spec.trainer.resourcePerNode: dropped")
    refused(bertja("trainjob", "create", "--api-server", k8s.endpoint, "--namespace", NS, "--name", "bj-a",
                   "--runtime", "nope", *SPEC_ARGS), "--runtime 'nope'")


def test_the_trainjob_step_is_a_drop_in_for_train_torch(tmp_path):
    """Every input the DAG gives train_torch (all but its rank count) and every output, with the same
    types; the TrainJob settings on top; compiled in the control image, as is the exit task."""
    from kfp import compiler

    from components.torch_train.component import train_torch
    from components.torch_train.trainjob_component import train_torch_trainjob
    from components.tpu.component import release_compute

    def interface(component):
        path = tmp_path / f"{component.name}.yaml"
        compiler.Compiler().compile(component, str(path))
        compiled = yaml.safe_load(path.read_text())
        assert "bertja-tpu-control" in json.dumps(compiled["deploymentSpec"]) or component is train_torch
        return compiled["root"]

    ours, theirs = interface(train_torch_trainjob), interface(train_torch)
    for kind in ("parameters", "artifacts"):
        mine = ours["inputDefinitions"][kind]
        for name, definition in theirs["inputDefinitions"][kind].items():
            if name != "processes":
                assert mine[name] == definition, name
        assert ours["outputDefinitions"][kind] == theirs["outputDefinitions"][kind]
    added = set(ours["inputDefinitions"]["parameters"]) - set(theirs["inputDefinitions"]["parameters"])
    assert {"trainer_image", "runtime", "num_nodes", "gpus_per_node", "node_selector", "tolerations"} <= added
    assert ours["inputDefinitions"]["parameters"]["runtime"]["defaultValue"] == "torch-distributed"
    release = interface(release_compute)["inputDefinitions"]["parameters"]
    assert release["trainjobs"] == {"defaultValue": False, "isOptional": True, "parameterType": "BOOLEAN"}


class _Artifact:
    """What a KFP component sees of an artifact (uri, local path, metadata)."""

    def __init__(self, uri: str, path: Path):
        self.uri, self.path, self.metadata = uri, str(path), {}
        path.parent.mkdir(parents=True, exist_ok=True)


class _Metrics(_Artifact):
    def log_metric(self, key, value):
        self.metadata[key] = value


def test_the_trainjob_step_trains_in_the_content_named_dir_and_leaves_train_torchs_outputs(
        k8s, gcs, tmp_path, monkeypatch):
    """The component's function on the stand-in API and the GCS emulator: the TrainJob trains in the
    content-named dir under training_root (16 ranks are part of its identity), holding the dir's lease
    while it runs; the outputs are what evaluate and publish read from train_torch; the job is gone."""
    from components import artifacts
    from components.tokenizer.byte import write_byte_tokenizer
    from components.torch_train.trainjob_component import train_torch_trainjob

    write_byte_tokenizer(str(tmp_path / "tok"))
    tokenizer = _Artifact(f"{gcs}/art/tokenizer", tmp_path / "a" / "tokenizer")
    storage.copy_tree(str(tmp_path / "tok"), artifacts.data_root(tokenizer.uri, tokenizer.path))
    shard_sets = []
    for corpus in ("cc100", "wiki"):
        shard = _Artifact(f"{gcs}/art/{corpus}", tmp_path / "a" / corpus)
        artifacts.write_manifest(shard.path, {"files": ["shard-0"]})
        storage.write_text(f"{gcs}/art/{corpus}_data/shard-0/ids.bin", corpus)
        shard_sets.append([shard])
    seen = {}

    def trainer_wrote(job):  # rank 0 at the end: the HF dir (with its tokenizer) and the final status
        argv = job["spec"]["trainer"]["command"]
        model_dir = argv[argv.index("--model-dir") + 1]
        seen.update(argv=argv, lease=storage.exists(f"{model_dir}/lease.json"))
        storage.copy_tree(str(tmp_path / "tok"), f"{model_dir}/hf")
        storage.write_text(f"{model_dir}/hf/config.json", "{}")
        storage.write_text(f"{model_dir}/status/complete.json", json.dumps(
            {"architecture": "modernbert-tiny", "finished": True, "hf_dir": f"{model_dir}/hf",
             "stages": [{"stage": 1, "loss": 3.5, "tokens_per_sec": 1e5, "history": [[1, 4.0], [2, 3.5]]}]}))

    k8s.on_complete = trainer_wrote
    monkeypatch.setenv("BERTJA_RUN_ID", "run-77")
    monkeypatch.setattr(trainjob, "TrainJobControl", lambda namespace: control(k8s))
    out = {name: (_Metrics if name == "metrics" else _Artifact)(f"{gcs}/art/{name}", tmp_path / "out" / name)
           for name in ("model", "hf_model", "metrics", "loss_curve")}
    trained = train_torch_trainjob.python_func(
        shards=shard_sets[0], more_shards=shard_sets[1], tokenizer=tokenizer, variant="byte", plan="modernbert-ja",
        trainer_image="registry.example/bertja-train-gpu:1", architecture="tiny", seq_lengths=[128],
        train_steps=[20], global_batch_size=32, micro_batch_size=2, seed=5, training_root=f"{gcs}/training",
        num_nodes=2, gpus_per_node=8, cpu="180", memory="1600Gi",
        node_selector={"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}], **out)

    from components.torch_train import configs

    stages = configs.plan_stages("modernbert-ja", seq_lengths=128, train_steps=20, global_batch_size=32)
    assert (trained.seq_length, trained.mask_rate) == (128, stages[-1].mask_rate)  # what evaluation masks at
    argv = seen["argv"]
    training_dir = argv[argv.index("--model-dir") + 1]
    assert training_dir.startswith(f"{gcs}/training/") and seen["lease"]
    assert not storage.exists(f"{training_dir}/lease.json")  # released after
    identity = json.loads(storage.read_text(f"{training_dir}/inputs.json"))
    assert identity["processes"] == 16 and identity["variant"] == "byte" and len(identity["data"]) == 2
    assert argv[argv.index("--data") + 1] == f"{gcs}/art/cc100_data/shard-0,{gcs}/art/wiki_data/shard-0"
    for flag, value in (("--seq-length", "128"), ("--train-steps", "20"), ("--global-batch-size", "32"),
                        ("--warmup-steps", None), ("--learning-rate", None)):  # every stage spelled out
        assert argv[argv.index(flag) + 1] == ",".join(
            str(getattr(st, flag[2:].replace("-", "_"))) for st in stages), flag
        assert value is None or set(argv[argv.index(flag) + 1].split(",")) == {value}, flag
    for flag, value in (("--micro-batch-size", "2"), ("--seed", "5"), ("--architecture", "modernbert-tiny")):
        assert argv[argv.index(flag) + 1] == value, flag
    (body,) = k8s.created_bodies
    assert body["metadata"]["name"] == trainjob.trainjob_name("run-77", "byte") and not k8s.jobs
    assert body["spec"]["trainer"]["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    # train_torch's outputs: the HF dir with its tokenizer, the training record, metrics, the loss curve
    hf_dir = artifacts.data_root(out["hf_model"].uri, out["hf_model"].path)
    assert sorted(storage.list_files(hf_dir)) == sorted(
        f"{hf_dir}/{n}" for n in {*os.listdir(tmp_path / "tok"), "config.json"})
    record = artifacts.read_manifest(out["model"].path)
    assert record["training_dir"] == training_dir and record["final_model_dir"] == f"{training_dir}/hf"
    assert record["trainjob"] == f"{NS}/{body['metadata']['name']}" and "history" not in record["stages"][0]
    assert out["metrics"].metadata["stage1_loss"] == 3.5 and "trainjob_elapsed_s" in out["metrics"].metadata
    assert "stage 1" in Path(out["loss_curve"].path).read_text().lower()

    # Another world size splits the batch otherwise: another training dir.
    monkeypatch.setenv("BERTJA_RUN_ID", "run-78")
    again = train_torch_trainjob.python_func(
        shards=shard_sets[0], more_shards=shard_sets[1], tokenizer=tokenizer, variant="byte", plan="modernbert-ja",
        trainer_image="img:1", architecture="tiny", seq_lengths=[128], train_steps=[20], global_batch_size=32,
        micro_batch_size=2, seed=5, training_root=f"{gcs}/training", num_nodes=4, gpus_per_node=8, **out)
    assert again.seq_length == 128 and seen["argv"][seen["argv"].index("--model-dir") + 1] != training_dir


def test_the_exit_task_releases_trainjobs_only_when_asked_and_tpus_only_on_tpu(k8s, monkeypatch, capfd):
    from components.tpu import orchestrate

    monkeypatch.delenv("BERTJA_RUN_ID", raising=False)
    monkeypatch.delenv("VERTEX_AI_PIPELINES_RUN_LABELS", raising=False)
    monkeypatch.setattr(trainjob, "TrainJobControl", lambda namespace: control(k8s))
    tpu_calls = []
    monkeypatch.setattr(orchestrate, "release_run", lambda **kw: tpu_calls.append(kw) or [{"tpu": kw["run_id"]}])
    c = control(k8s)
    c.create(spec(name=trainjob.trainjob_name("run-5", "byte")))
    kw = dict(run_id="run-5", variants=["byte", "modernbert"], gcp_project="p", gcp_zone="z")
    assert orchestrate.release_training(backend="cpu", **kw) == [] and k8s.jobs  # not asked: kept
    released = orchestrate.release_training(backend="cpu", trainjobs=True, **kw)
    assert [r["deleted"] for r in released] == [True, False] and not k8s.jobs and not tpu_calls
    assert "no TPU VM to release" in capfd.readouterr().err
    # a failing TPU release does not keep the TrainJobs alive, and is raised after
    c.create(spec(name=trainjob.trainjob_name("run-5", "byte")))
    monkeypatch.setattr(orchestrate, "release_run", lambda **kw: (_ for _ in ()).throw(RuntimeError("tpu api down")))
    with pytest.raises(RuntimeError, match="tpu api down"):
        orchestrate.release_training(backend="tpu", trainjobs=True, **kw)
    assert not k8s.jobs


def test_sigterm_while_following_deletes_the_job_and_exits_1(tmp_path):
    import signal
    import time

    slow = FakeKubernetesApi(phase_s=60).start()  # stays Created/Running far longer than the test
    try:
        proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "trainjob", "train", "--api-server",
                                 slow.endpoint, "--namespace", NS, "--poll", "0.05", "--name", "bj-term",
                                 "--image", "img:1", "--plan", "bert", "--data", "gs://b/d", "--model-dir",
                                 str(tmp_path / "m"), "--tokenizer-dir", "gs://b/t"],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not slow.jobs and time.monotonic() < deadline:
            time.sleep(0.05)
        assert slow.jobs, "the TrainJob was never created"
        time.sleep(0.3)  # following now
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1 and "SIGTERM" in err and "Traceback" not in err, err[-2000:]
        assert not slow.jobs and slow.paths("DELETE", TRAINJOBS + "/bj-term$") == [200]
    finally:
        slow.stop()

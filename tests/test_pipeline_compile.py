"""The compiled pipeline, parsed strictly into the kfp-pipeline-spec protobufs.

What a user relies on when they upload the YAML: the ParallelFor over shards, the
exit handler that always runs, caching on (but never for source resolution), the
profile's parameter defaults, and the Kubernetes settings per profile.
"""

import re
import subprocess
import sys

import pytest
import yaml
from google.protobuf import json_format
from kfp.kubernetes import kubernetes_executor_config_pb2
from kfp.pipeline_spec import pipeline_spec_pb2

from components.errors import BadInput
from components import images
from pipelines import commands, parameters, profiles
from pipelines.pretraining import TRAIN_RETRY


def compile_to(tmp_path, profile, **kw):
    out = tmp_path / f"{profile}.yaml"
    if profiles.get(profile).needs_gcs_root:
        kw.setdefault("pipeline_root", "gs://bertja-test/root")
    commands.compile_pipeline(str(out), profile, **kw)
    docs = list(yaml.safe_load_all(out.read_text()))
    spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    platform = json_format.ParseDict(docs[1], pipeline_spec_pb2.PlatformSpec(), ignore_unknown_fields=False) \
        if len(docs) > 1 else None
    return spec, platform


def deployment(spec):
    return json_format.ParseDict(json_format.MessageToDict(spec.deployment_spec),
                                 pipeline_spec_pb2.PipelineDeploymentConfig(), ignore_unknown_fields=False)


def k8s_configs(platform):
    out = {}
    if platform is None:
        return out
    executors = json_format.MessageToDict(platform.platforms["kubernetes"].deployment_spec)["executors"]
    for name, cfg in executors.items():
        out[name] = json_format.ParseDict(cfg, kubernetes_executor_config_pb2.KubernetesExecutorConfig(),
                                          ignore_unknown_fields=False)
    return out


def all_tasks(spec):
    """(component name, task name, task) for every task in every DAG."""
    dags = [("root", spec.root.dag)] + [(n, c.dag) for n, c in spec.components.items() if c.HasField("dag")]
    return [(owner, name, task) for owner, dag in dags for name, task in dag.tasks.items()]


@pytest.mark.parametrize("profile", list(profiles.PROFILES))
def test_every_profile_compiles_and_parses_strictly(tmp_path, profile):
    spec, platform = compile_to(tmp_path, profile)
    assert spec.pipeline_info.name == "bert-japanese-pretraining"
    dep = deployment(spec)
    assert dep.executors, "no executors"
    # every executor is a lightweight Python component on one of our images
    for name, ex in dep.executors.items():
        assert "/bertja-" in ex.container.image, (name, ex.container.image)
    # defaults are the profile's values over the recipe's
    defaults = {k: json_format.MessageToDict(v.default_value)
                for k, v in spec.root.input_definitions.parameters.items()}
    expected = parameters.merged(base=profiles.get(profile).parameters)
    for key, value in expected.items():
        assert defaults[key] == value, key
    k8s_configs(platform)  # parses strictly


def test_shape_exit_handler_parallel_for_and_caching(tmp_path):
    spec, _ = compile_to(tmp_path, "gcp")
    root = spec.root.dag.tasks
    # the exit task runs whatever happened inside the handler, and depends on nothing else
    release = root["release-compute"]
    assert release.trigger_policy.strategy == pipeline_spec_pb2.PipelineTaskSpec.TriggerPolicy.ALL_UPSTREAM_TASKS_COMPLETED
    assert list(release.dependent_tasks) == ["exit-handler-1"]
    tasks = all_tasks(spec)
    names = [t[1] for t in tasks]
    for step in ("check-parameters", "resolve-sources", "wiki-corpus", "split-corpus", "sample-corpus", "alphabet",
                 "wordpiece-tokenizer", "variant-tokenizer", "train-model", "convert-model", "evaluate-model",
                 "publish-model"):
        assert step in names, step
    # pretraining data runs per shard inside parameter iterators (ParallelFor), with bounded parallelism
    loops = {n: c for n, c in spec.components.items() if c.HasField("dag") and n.startswith("comp-for-loop")}
    shard_loops = []
    for owner, name, task in tasks:
        if task.HasField("parameter_iterator"):
            inner = loops[task.component_ref.name].dag.tasks
            if any(t.startswith("pretraining-data") for t in inner):
                shard_loops.append(task)
    # The variants are laid out twice: stage 1 on CC-100, or on Wikipedia's shards (whose stage-1 tasks write
    # nothing for stage1_corpus 'none'); per Model Garden variant: stage-1, Wikipedia and held-out shard
    # loops; per PyTorch-trainer variant (cc100 only): token shards of both corpora and held-out token shards
    model_garden, torch = (len(parameters.TRAINER_VARIANTS[t]) for t in ("model-garden", "torch"))
    assert len(shard_loops) == 2 * 3 * model_garden + 3 * torch
    assert {t.iterator_policy.parallelism_limit for t in shard_loops} >= {profiles.get("gcp").data_parallelism}
    # training consumes the collected outputs of the shard loops
    trains = [t for _o, n, t in tasks if n.startswith("train-model")]
    assert len(trains) == 2 * model_garden
    for train in trains:
        for key in ("stage1_examples", "stage2_examples"):
            assert train.inputs.artifacts[key].task_output_artifact.producer_task.startswith("for-loop"), key
        # the TPU VM runs the TPU build of the trainer, named at compile time
        image_ref = train.inputs.parameters["trainer_image"].runtime_value.constant.string_value
        assert image_ref == images.image("train-tpu"), image_ref
    # each variant's sub-pipeline runs only when the run's `variants` and `trainer` select it; the MeCab
    # WordPiece steps only when a variant built on them is selected
    conditions = [t for _o, _n, t in tasks if "variants-selected" in t.trigger_policy.condition]
    assert len(conditions) == 2 * (1 + model_garden) + torch
    # and within each variant, JGLUE or not (tests/test_jglue.py checks that branch)
    assert len([t for _o, _n, t in tasks if "jglue_uri" in t.trigger_policy.condition]) == 2 * (2 * model_garden
                                                                                                 + torch)
    subs = []
    for cond in conditions:
        inner = spec.components[cond.component_ref.name].dag.tasks
        subs += [n for n in inner if n.startswith("bert-japanese-")]
    assert len([n for n in subs if n.startswith("bert-japanese-variant")]) == 2 * model_garden
    assert len([n for n in subs if n.startswith("bert-japanese-torch-variant")]) == torch
    # caching: on for every step but source resolution and the exit task
    for _owner, name, task in tasks:
        if task.component_ref.name in spec.components and spec.components[task.component_ref.name].HasField("dag"):
            continue
        expected = name not in ("resolve-sources", "release-compute", "jglue-identity")
        assert task.caching_options.enable_cache is expected, name


def test_platform_settings_per_profile(tmp_path):
    spec, platform = compile_to(tmp_path, "gcp")
    cfgs = k8s_configs(platform)
    gcp = profiles.get("gcp").platform
    train_exec = spec.components["comp-train-model"].executor_label
    cfg = cfgs[train_exec]
    assert cfg.active_deadline_seconds == gcp.resources["train"].timeout_s
    assert dict(cfg.node_selector.labels) == gcp.node_selector
    assert [t.key for t in cfg.tolerations] == [t["key"] for t in gcp.tolerations]
    # every step pod on a cluster runs as the images' non-root user
    for name, c in cfgs.items():
        assert c.security_context.run_as_non_root and c.security_context.run_as_user == 10001, name
    res = deployment(spec).executors[train_exec].container.resources
    assert res.resource_cpu_limit == gcp.resources["train"].cpu
    assert res.resource_memory_limit == gcp.resources["train"].memory
    # local: no Kubernetes settings at all
    _spec, local_platform = compile_to(tmp_path, "local")
    assert not k8s_configs(local_platform)


def test_gpu_profile_gives_the_pytorch_trainer_its_accelerators_image_and_ranks(tmp_path):
    """gke-gpu: the train-torch task asks for the profile's GPUs (type and count), lands on the GPU
    nodes (their node selector, plus their taint's toleration), runs the GPU image and one torchrun
    rank per GPU; every other task keeps the CPU node pool and no accelerator."""
    spec, platform = compile_to(tmp_path, "gke-gpu")
    cfgs = k8s_configs(platform)
    gpu = profiles.get("gke-gpu").platform.accelerators["train-torch"]
    executors = deployment(spec).executors
    trains = [t for _o, n, t in all_tasks(spec) if n == "train-torch"]
    assert trains
    for train in trains:
        label = spec.components[train.component_ref.name].executor_label
        container = executors[label].container
        assert container.resources.accelerator.resource_type == gpu.type
        assert container.resources.accelerator.resource_count == str(gpu.count)
        assert container.image == images.image(gpu.image)
        assert _constant(train, "processes") == gpu.count > 1
        assert dict(cfgs[label].node_selector.labels) == gpu.node_selector
        assert "nvidia.com/gpu" in [t.key for t in cfgs[label].tolerations]
    for name, ex in executors.items():
        if ex.container.image != images.image(gpu.image):
            assert not ex.container.resources.HasField("accelerator"), name
            if name in cfgs:
                assert dict(cfgs[name].node_selector.labels) == profiles.get("gke-gpu").platform.node_selector, name
    # CPU profiles: no accelerator anywhere
    spec, _ = compile_to(tmp_path, "gcp")
    assert not any(ex.container.resources.HasField("accelerator") for ex in deployment(spec).executors.values())


def test_secrets_become_env_from_secret_references_only(tmp_path, monkeypatch):
    import dataclasses

    gcp = profiles.get("gcp")
    with_secret = dataclasses.replace(gcp, name="gcp-secret", platform=dataclasses.replace(
        gcp.platform, secret_env={"HF_TOKEN": ("bertja-publish", "hf-token")}))
    monkeypatch.setitem(profiles.PROFILES, "gcp-secret", with_secret)
    spec, platform = compile_to(tmp_path, "gcp-secret")
    cfg = k8s_configs(platform)[spec.components["comp-publish-model"].executor_label]
    (secret,) = cfg.secret_as_env
    assert secret.secret_name == "bertja-publish"
    assert secret.key_to_env[0].env_var == "HF_TOKEN"
    assert "hf-token" in (tmp_path / "gcp-secret.yaml").read_text()


@pytest.mark.parametrize("param,value,fragment", [
    ("cc100_num_shards", "-1", "cc100_num_shards"),
    ("variants", "wordpiece,bpe", "variants"),
    ("vocab_size", "5000", "vocab_size"),
    ("wikipedia_dump_date", "2023-01-02", "wikipedia_dump_date"),
    ("model_size", "huge", "model_size"),
])
def test_bad_parameters_fail_at_compile_naming_the_parameter(tmp_path, param, value, fragment):
    with pytest.raises(BadInput, match=fragment):
        commands.compile_pipeline(str(tmp_path / "x.yaml"), "gcp", commands.parse_params([f"{param}={value}"]),
                                  pipeline_root="gs://bucket/root")
    assert not (tmp_path / "x.yaml").exists()


def test_malformed_gcs_root_and_missing_root_fail_from_the_cli(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "pipelines.cli", "compile", str(tmp_path / "p.yaml"), *args],
                              capture_output=True, text=True)
    bad = run("--profile", "gcp", "--pipeline-root", "gs://Bad_Bucket/x")
    assert bad.returncode == 2 and "pipeline_root" in bad.stderr and "Traceback" not in bad.stderr
    missing = run("--profile", "gcp")
    assert missing.returncode == 2 and "--pipeline-root" in missing.stderr
    unknown = run("--profile", "local", "--param", "no_such=1")
    assert unknown.returncode == 2 and "no_such" in unknown.stderr


def test_first_step_rejects_what_a_ui_user_can_type():
    values = parameters.merged({"training_backend": "tpu", "gcp_project": ""})
    with pytest.raises(BadInput, match="gcp_project"):
        parameters.validate(values)
    parameters.validate(values, for_run=False)  # compiling leaves it to the run form


# Placeholders a backend resolves per run (or per task execution): a cached task taking one is never a hit.
def test_trainjob_profile_trains_torch_variants_on_a_trainjob_and_the_exit_task_releases_it(tmp_path):
    """gke-trainjob (train-torch on 2 nodes): the torch sub-pipeline's train step is the TrainJob control
    step (control image, no GPU, the "train" class's long timeout), with the profile's TrainJob settings as
    constants, the pod label's run id and training's retries; evaluate and publish read it as they read
    train_torch; the one exit task releases TrainJobs too. Other profiles compile none of it."""
    from components import run_identity

    profile = profiles.get("gke-trainjob")
    acc, node = profile.platform.accelerators["train-torch"], profile.platform.resources["train-torch"]
    assert acc.nodes > 1 and profile.platform.trainjob("train-torch") is acc
    spec, platform = compile_to(tmp_path, "gke-trainjob")
    cfgs, executors, tasks = k8s_configs(platform), deployment(spec).executors, all_tasks(spec)
    assert not [n for _o, n, _t in tasks if n == "train-torch"]
    trains = [(o, t) for o, n, t in tasks if n == "train-torch-trainjob"]
    assert trains and all(o.startswith("comp-bert-japanese-torch-variant") for o, _t in trains)
    for owner, train in trains:
        label = spec.components[train.component_ref.name].executor_label
        container = executors[label].container
        assert container.image == images.image("tpu") and not container.resources.HasField("accelerator")
        assert {k: _constant(train, k) for k in ("trainer_image", "runtime", "num_nodes", "gpus_per_node", "cpu",
                                                 "memory", "node_selector", "tolerations", "timeout_hours",
                                                 "training_root")} == {
            "trainer_image": images.image(acc.image), "runtime": acc.runtime, "num_nodes": acc.nodes,
            "gpus_per_node": acc.count, "cpu": node.cpu, "memory": node.memory, "node_selector": acc.node_selector,
            "tolerations": acc.tolerations, "timeout_hours": node.timeout_s / 3600,
            "training_root": "gs://bertja-test/root/bertja-training"}
        (env,) = cfgs[label].field_path_as_env
        assert (env.name, env.field_path) == (run_identity.RUN_ID_ENV, run_identity.KFP_RUN_ID_FIELD_PATH)
        assert cfgs[label].active_deadline_seconds == profile.platform.resources["train"].timeout_s
        assert dict(cfgs[label].node_selector.labels) == profile.platform.node_selector  # the CPU pool
        policy = train.retry_policy  # a retried control step adopts the live TrainJob (same name)
        assert policy.max_retry_count == TRAIN_RETRY["num_retries"] and policy.backoff_factor == 2.0
        inner = spec.components[owner].dag.tasks
        for consumer in ("evaluate-model", "publish-model"):
            assert inner[consumer].inputs.artifacts["hf_model"].task_output_artifact.producer_task == \
                "train-torch-trainjob"
        for key in ("seq_length", "mask_rate"):
            assert inner["evaluate-model"].inputs.parameters[key].task_output_parameter.producer_task == \
                "train-torch-trainjob"
    release = spec.root.dag.tasks["release-compute"]
    assert _constant(release, "trainjobs") is True and not release.caching_options.enable_cache
    (env,) = cfgs[spec.components["comp-release-compute"].executor_label].field_path_as_env
    assert env.name == run_identity.RUN_ID_ENV
    # every other profile: no TrainJob step, the exit task without the flag
    for other in ("gke-gpu", "gcp", "local"):
        spec, _ = compile_to(tmp_path, other)
        assert "train-torch-trainjob" not in (tmp_path / f"{other}.yaml").read_text()
        assert not [n for _o, n, _t in all_tasks(spec) if "trainjob" in n]
        assert "trainjobs" not in spec.root.dag.tasks["release-compute"].inputs.parameters


RUN_SCOPED = ("{{$.pipeline_job_uuid}}", "{{$.pipeline_job_name}}", "{{$.pipeline_job_resource_name}}",
              "{{$.pipeline_task_uuid}}", "{{$.pipeline_job_create_time_utc}}", "{{$.pipeline_job_schedule_time_utc}}")


@pytest.mark.parametrize("profile", list(profiles.PROFILES))
def test_no_cached_task_takes_a_run_scoped_placeholder(tmp_path, profile):
    spec, _ = compile_to(tmp_path, profile)
    text = (tmp_path / f"{profile}.yaml").read_text()
    assert "{{$.pipeline_job_uuid}}" in text  # the exit task still takes it: the check below sees real IR
    takers = []
    for _owner, name, task in all_tasks(spec):
        for key, param in task.inputs.parameters.items():
            value = json_format.MessageToJson(param.runtime_value.constant) if param.HasField("runtime_value") else ""
            if any(p in value for p in RUN_SCOPED):
                takers.append(name)
                # only a component task with caching off may take one; a sub-DAG would hand it on
                assert not spec.components[task.component_ref.name].HasField("dag"), (name, key)
                assert not task.caching_options.enable_cache, (name, key, value)
    assert takers == ["release-compute"]
    # ...nor does any component's code (a launcher resolves placeholders in command and args too).
    for name, executor in deployment(spec).executors.items():
        code = "\n".join([*executor.container.command, *executor.container.args])
        assert not any(p in code for p in RUN_SCOPED), name


@pytest.mark.parametrize("profile", ["kind", "gcp", "vertex"])
def test_cluster_tasks_read_the_run_id_from_the_pod_label_and_training_retries(tmp_path, profile):
    from components import run_identity

    spec, platform = compile_to(tmp_path, profile)
    cfgs = k8s_configs(platform)
    if profile == "vertex":  # no Kubernetes config: the run id comes from Vertex's run labels (env)
        assert not cfgs
    for component in ("comp-train-model", "comp-release-compute") if cfgs else ():
        (env,) = cfgs[spec.components[component].executor_label].field_path_as_env
        assert (env.name, env.field_path) == ("BERTJA_RUN_ID", "metadata.labels['pipeline/runid']")
        assert env.field_path == run_identity.KFP_RUN_ID_FIELD_PATH
    trains = [t for _o, n, t in all_tasks(spec) if n == "train-model"]
    for train in trains:
        policy = train.retry_policy
        assert policy.max_retry_count == 3 and policy.backoff_duration.seconds == 120
        assert policy.backoff_factor == 2.0 and policy.backoff_max_duration.seconds == 3600
        root = train.inputs.parameters["training_root"].runtime_value.constant.string_value
        assert root == ("" if profile == "kind" else "gs://bertja-test/root/bertja-training")  # kind: MinIO root
    # The PyTorch trainer retries too, resuming in its content-named dir under the same root.
    torch_trains = [t for _o, n, t in all_tasks(spec) if n == "train-torch"]
    assert torch_trains
    for train in torch_trains:
        assert train.retry_policy.max_retry_count == 3
        root = train.inputs.parameters["training_root"].runtime_value.constant.string_value
        assert root == ("" if profile == "kind" else "gs://bertja-test/root/bertja-training")
    # Only training retries: a data step failing is a bug to read, not to repeat.
    assert all(not t.HasField("retry_policy") for _o, n, t in all_tasks(spec) if n not in ("train-model",
                                                                                         "train-torch"))


def test_local_runs_fail_fast_and_train_inside_the_task_output(tmp_path):
    spec, _ = compile_to(tmp_path, "local")
    for _o, name, task in all_tasks(spec):
        assert not task.HasField("retry_policy"), name
        if name in ("train-model", "train-torch"):
            assert task.inputs.parameters["training_root"].runtime_value.constant.string_value == ""


def _constant(task, name):
    value = task.inputs.parameters[name].runtime_value.constant
    return json_format.MessageToDict(value)


def test_recipe_layout_stage1_corpus_mecab_steps_and_the_torch_trainer(tmp_path):
    """Issue 12: CC-100 is read only for stage1_corpus=cc100, MeCab WordPiece only for its variants,
    one-stage recipes train once from scratch. Issue 13: PyTorch-trainer variants train on token shards
    of both corpora with train_torch, whose Hugging Face directory is evaluated on held-out token shards
    and published as is (no conversion)."""
    spec, _ = compile_to(tmp_path, "gcp")
    tasks = all_tasks(spec)
    owner_of = {}  # task name without KFP's "-N" suffix -> the components holding such a task
    for owner, name, _t in tasks:
        owner_of.setdefault(re.sub(r"-\d+$", "", name), []).append(owner)

    def condition_of(component):
        (task,) = [t for _o, _n, t in tasks if t.component_ref.name == component]
        return task.trigger_policy.condition

    # CC-100's download and split sit behind stage1_corpus == 'cc100'
    cc100_owner = [o for o, n, t in tasks if n.startswith("download-source")
                   and "cc100_url" in str(json_format.MessageToDict(t.inputs.parameters["url"]))]
    assert len(cc100_owner) == 1 and "stage1_corpus" in condition_of(cc100_owner[0])
    assert "'cc100'" in condition_of(cc100_owner[0])
    # UniDic, alphabet and WordPiece only when a MeCab variant is selected (once per stage-1 layout)
    assert len(owner_of["wordpiece-tokenizer"]) == 2 and owner_of["alphabet"] == owner_of["wordpiece-tokenizer"]
    assert all("variants-selected" in condition_of(o) for o in owner_of["wordpiece-tokenizer"])
    # Model Garden variants: two stages, or one (stage1_corpus 'none') from scratch, each reading TFRecords
    trains = [(o, t) for o, n, t in tasks if n.startswith("train-model")]
    stages = sorted(_constant(t, "stage1_corpus") if "stage1_corpus" in t.inputs.parameters
                    and t.inputs.parameters["stage1_corpus"].HasField("runtime_value") else "param"
                    for _o, t in trains)
    # every Model Garden training reads the run's stage1_corpus ('none': one stage from scratch), and so does
    # every stage-1 data task (its 'none' writes an empty dataset at once); no other data task takes it
    assert stages == ["param"] * len(trains)
    stage1_data = [t for _o, n, t in tasks if n.startswith("pretraining-data") and "stage1_corpus" in t.inputs.parameters]
    assert len(stage1_data) == 2 * len(parameters.TRAINER_VARIANTS["model-garden"])
    assert all(t.inputs.parameters["stage1_corpus"].component_input_parameter.endswith("stage1_corpus")
               for t in stage1_data)
    for _o, name, task in tasks:
        if name.startswith("pretraining-data"):
            assert _constant(task, "data_format") in ("tfrecord", "shards")
    # PyTorch-trainer variants: token shards (unmasked, one pass, no NSP), train_torch, evaluate, publish
    torch_subs = [n for n, c in spec.components.items() if n.startswith("comp-bert-japanese-torch-variant")]
    assert torch_subs
    for comp in torch_subs:
        inner = spec.components[comp].dag.tasks
        assert not any(n.startswith(("train-model", "convert-model")) for n in inner)
        loops = {n: spec.components[t.component_ref.name].dag.tasks for n, t in inner.items()
                 if t.HasField("parameter_iterator")}
        shown = {n: inner[n].task_info.name for n in loops}  # the loop's name in the UI
        shards = [t for loop in loops.values() for n, t in loop.items() if n.startswith("pretraining-data")]
        assert len(shards) == 3 and set(shown.values()) == {"stage1-token-shards", "wikipedia-token-shards",
                                                            "heldout-token-shards"}
        for t in shards:
            assert _constant(t, "data_format") == "shards" and _constant(t, "next_sentence_prediction") is False
            assert _constant(t, "dupe_factor") == 1
        train = inner["train-torch"]
        producers = {k: shown.get(a.task_output_artifact.producer_task) for k, a in train.inputs.artifacts.items()}
        assert producers["shards"] == "stage1-token-shards" and producers["more_shards"] == "wikipedia-token-shards"
        assert train.inputs.parameters["plan"].component_input_parameter.endswith("torch_plan")
        evaluate = inner["evaluate-model"]
        assert evaluate.inputs.artifacts["hf_model"].task_output_artifact.producer_task == "train-torch"
        assert shown[evaluate.inputs.artifacts["heldout"].task_output_artifact.producer_task] == "heldout-token-shards"
        for key in ("seq_length", "mask_rate"):  # the last stage's, from the trainer
            assert evaluate.inputs.parameters[key].task_output_parameter.producer_task == "train-torch"
        publish = inner["publish-model"]
        assert publish.inputs.artifacts["hf_model"].task_output_artifact.producer_task == "train-torch"
        assert any(n.startswith("condition") for n in inner)  # JGLUE or not, as for Model Garden variants
    # On a CPU profile the trainer runs on the CPU image as one process
    train_execs = {spec.components[t.component_ref.name].executor_label for _o, n, t in tasks if n == "train-torch"}
    assert {deployment(spec).executors[e].container.image for e in train_execs} == {images.image("convert")}
    assert all(_constant(t, "processes") == 1 for _o, n, t in tasks if n == "train-torch")


# The KFP 2.17 backend turns the pipeline spec into one Argo Workflow object, which Kubernetes keeps in
# etcd: a run whose Workflow is over etcd's request limit (1.5 MiB by default) is refused at creation.
# What the backend's compiler (backend/src/v2/compiler/argocompiler, since kubeflow/pipelines#10979)
# puts into that object, and so what this estimate counts:
# - workflow arguments holding each executor component's spec and container once per distinct
#   container (keyed by its hash), and each DAG component's spec once per name;
# - per task, its task spec as JSON in the driver's arguments (twice for a ParallelFor: the iterator
#   driver and the iteration's driver), plus the Argo DAG entries around it (about 1.2 kB).
# The running Workflow grows further with node status; the budget leaves room for that.
ETCD_REQUEST_LIMIT = 1.5 * 2 ** 20
WORKFLOW_BUDGET = 0.85 * ETCD_REQUEST_LIMIT
ARGO_TASK_OVERHEAD = 1200


def estimated_workflow_bytes(spec: dict) -> int:
    import hashlib
    import json

    def size(obj) -> int:
        return len(json.dumps(obj, separators=(",", ":"), sort_keys=True))

    executors = spec["deploymentSpec"]["executors"]
    arguments = {"components-root": size(spec["root"])}
    tasks = 0
    for name, component in spec["components"].items():
        if "executorLabel" in component:
            container = executors[component["executorLabel"]].get("container", {})
            key = hashlib.sha256(json.dumps(container, sort_keys=True).encode()).hexdigest()
            arguments.setdefault(f"components-{key}", size(component))
            arguments.setdefault(f"implementations-{key}", size(container))
        else:
            arguments[f"components-{name}"] = size(component)
    for dag in [spec["root"]] + [c for c in spec["components"].values() if "dag" in c]:
        for task in dag["dag"]["tasks"].values():
            copies = 2 if "parameterIterator" in task or "artifactIterator" in task else 1
            tasks += copies * size(task) + ARGO_TASK_OVERHEAD
    return sum(arguments.values()) + tasks


@pytest.mark.parametrize("profile", list(profiles.PROFILES))
def test_the_argo_workflow_fits_etcd(tmp_path, profile):
    """Recipes are data (the layout is the same for every one), so one compile per profile says it."""
    path = tmp_path / f"{profile}.yaml"
    root = "gs://bertja-test/root" if profiles.get(profile).needs_gcs_root else None
    commands.compile_pipeline(str(path), profile, pipeline_root=root)
    estimate = estimated_workflow_bytes(next(yaml.safe_load_all(path.read_text())))
    assert estimate < WORKFLOW_BUDGET, (
        f"{profile}: the Argo Workflow would be about {estimate / 2 ** 20:.2f} MiB, over the "
        f"{WORKFLOW_BUDGET / 2 ** 20:.2f} MiB budget under etcd's limit")

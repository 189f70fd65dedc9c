"""The Helm chart, rendered and linted by a real Helm engine (helm-python-sdk, offline), every
manifest validated strictly against the Kubernetes schemas, and bad values refused."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import helm_python as helm
import kubernetes_validate.utils as kv
import pytest
import yaml
from fake_kfp_api import FakeKfpApi

from components import images

CHART = Path(__file__).resolve().parent.parent / "helm" / "bert-japanese-pipelines"
# kind's pinned node (deploy/kind.sh) and the newest version kubernetes-validate knows.
KUBE_VERSIONS = sorted({"1.33.0", kv.latest_version()})
RELEASE, NAMESPACE = "bertja", "kubeflow"


def values_file(name: str) -> dict:
    return yaml.safe_load((CHART / name).read_text(encoding="utf-8"))


GOOD_VALUES = {
    "defaults": {},
    "kind": values_file("values-kind.yaml"),
    "gke": values_file("values-gke.yaml"),
    "multi-user with RBAC, profile namespace and TPU janitor": {
        "kfp": {"multiUser": True, "namespace": "team-a"},
        "hookJob": {"podAnnotations": {"sidecar.istio.io/inject": "false"}},
        "tpuJanitor": {"enabled": True, "project": "my-project", "zone": "us-central1-b", "dryRun": True,
                       "kfpEndpoint": "http://ml-pipeline.kubeflow:8888", "minAgeSeconds": 7200,
                       "podAnnotations": {"sidecar.istio.io/inject": "false"}},
    },
    "TrainJobs with their janitor, also for KFP standalone's runner": {
        "trainjob": {"enabled": True, "serviceAccounts": ["pipeline-runner"], "runtimes": ["torch-distributed", "torch-h100"],
                     "janitor": {"enabled": True, "dryRun": True, "podAnnotations": {"sidecar.istio.io/inject": "false"}}},
        "pipeline": {"profile": "gke-trainjob", "parameters": {"gcp_project": "my-project"}},
        "gcs": {"bucket": "my-bucket"},
    },
    "GPU node pool profile": {
        "pipeline": {"profile": "gke-gpu", "parameters": {"gcp_project": "my-project"}}, "gcs": {"bucket": "my-bucket"},
    },
    "multi-user, run on install, existing account": {
        "serviceAccount": {"create": False, "name": "team-runner"},
        "rbac": {"create": False},
        "kfp": {"endpoint": "https://kubeflow.example.com/pipeline", "multiUser": True},
        "hookJob": {"podAnnotations": {"sidecar.istio.io/inject": "false"}},
        "pipeline": {"runOnInstall": True, "parameters": {"wikipedia_dump_date": "20240101"}},
        "schedule": {"enabled": False, "name": "x", "cron": "0 0 3 1 * *"},
    },
}


def render(values: dict) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def manifests(values: dict) -> list[dict]:
    docs = []
    for path, text in render(values).items():
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def hook_job(values: dict) -> dict:
    (job,) = by_kind(manifests(values), "Job")
    return job


def pod_template(workload: dict) -> dict:
    """A Job's or a CronJob's pod template."""
    spec = workload["spec"]
    return spec["jobTemplate"]["spec"]["template"] if workload["kind"] == "CronJob" else spec["template"]


def pod_containers(job: dict) -> list[dict]:
    spec = pod_template(job)["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def workloads(docs: list[dict]) -> list[dict]:
    return by_kind(docs, "Job") + by_kind(docs, "CronJob")


@pytest.mark.parametrize("name", GOOD_VALUES)
def test_chart_lints_clean(name):
    for version in KUBE_VERSIONS:
        report = helm.lint(CHART, GOOD_VALUES[name], strict=True, kube_version=f"v{version}")
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert not problems, problems


@pytest.mark.parametrize("name", GOOD_VALUES)
def test_every_manifest_validates_strictly(name):
    docs = manifests(GOOD_VALUES[name])
    assert {"ServiceAccount", "ConfigMap"} & {d["kind"] for d in docs}
    for doc in docs:
        for version in KUBE_VERSIONS:
            # Unknown kinds raise SchemaNotFoundError: the test fails, as it should.
            kv.validate(doc, version, strict=True)


def test_validation_rejects_an_unknown_field():
    """The strict validation above can fail: a misspelt field is caught."""
    (config_map,) = by_kind(manifests({}), "ConfigMap")
    config_map["metadata"]["labelz"] = {"a": "b"}
    with pytest.raises(kv.ValidationError):
        kv.validate(config_map, kv.latest_version(), strict=True)


def test_defaults_follow_components_images_and_package_version():
    """If this fails after a release bump: `make chart-sync`."""
    version = images.version()
    with helm.Chart.load(CHART) as chart:
        assert chart.metadata["appVersion"] == version
        assert chart.version == version
        values = chart.values
    assert values["image"]["tag"] == version
    assert values["image"]["registry"] == images.REGISTRY
    assert values["image"]["repositories"] == {key: repo for key, (repo, _, _) in images.IMAGES.items()}
    (config_map,) = by_kind(manifests({}), "ConfigMap")
    rendered = yaml.safe_load(config_map["data"]["images.json"])
    assert rendered == {key: images.image(key, registry=images.REGISTRY, tag=version) for key in images.IMAGES}


def test_schema_knows_exactly_the_pipeline_parameters():
    import dataclasses

    from pipelines.parameters import PipelineParameters

    with helm.Chart.load(CHART) as chart:
        names = chart.schema["properties"]["pipeline"]["properties"]["parameters"]["propertyNames"]["enum"]
    assert names == [f.name for f in dataclasses.fields(PipelineParameters)], "run `make chart-sync`"


def test_chart_sync_brings_a_stale_chart_up_to_date(tmp_path, monkeypatch):
    import shutil

    sys.path.insert(0, str(CHART.parent.parent / "deploy"))
    try:
        import chart_sync
    finally:
        sys.path.pop(0)
    stale = tmp_path / "chart"
    shutil.copytree(CHART, stale)
    for name, old, new in [("Chart.yaml", "appVersion: ", "appVersion: \"0.0.1\"  # "),
                           ("values.yaml", "  tag: ", "  tag: \"0.0.1\"  # "),
                           ("values.yaml", "    tpu: ", "    tpu: old-name  # ")]:
        path = stale / name
        path.write_text(path.read_text().replace(old, new, 1))
    monkeypatch.setattr(chart_sync, "CHART", stale)
    assert chart_sync.main() == 0
    with helm.Chart.load(stale) as chart:
        assert chart.metadata["appVersion"] == images.version()
        assert chart.values["image"]["tag"] == images.version()
        assert chart.values["image"]["repositories"]["tpu"] == images.IMAGES["tpu"][0]
    assert (stale / "values.schema.json").read_text() == (CHART / "values.schema.json").read_text()


def test_hook_job_compiles_then_schedules_with_the_data_image():
    job = hook_job({})
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"post-install", "post-upgrade"}
    spec = job["spec"]["template"]["spec"]
    (compile_,) = spec["initContainers"]
    (schedule,) = spec["containers"]
    data_image = images.image("data", registry=images.REGISTRY, tag=images.version())
    assert compile_["image"] == schedule["image"] == data_image
    assert compile_["command"] == schedule["command"] == ["bertja"]
    assert compile_["args"] == ["compile", "/work/pipeline.yaml", "--profile", "kind"]
    args = schedule["args"]
    assert args[0] == "schedule"
    opts = dict(zip(args[1::2], args[2::2]))
    assert opts["--profile"] == "kind"
    assert "--service-account" not in opts and "--namespace" not in opts
    assert opts["--cron"] == "0 0 3 1 * *"
    assert opts["--name"] == "bert-japanese-retrain"
    assert opts["--pipeline-file"] == "/work/pipeline.yaml"
    assert opts["--endpoint"] == "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
    assert opts["--max-concurrency"] == "1"
    # The pipeline's components are compiled against the chart's images.
    env = {e["name"]: e["valueFrom"]["configMapKeyRef"]["key"] for e in compile_["env"]}
    assert env == {"BERTJA_IMAGE_REGISTRY": "BERTJA_IMAGE_REGISTRY", "BERTJA_IMAGE_TAG": "BERTJA_IMAGE_TAG"}


def test_gke_values_wire_workload_identity_bucket_and_parameters():
    values = GOOD_VALUES["gke"]
    docs = manifests(values)
    (account,) = by_kind(docs, "ServiceAccount")
    assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"] == values["serviceAccount"]["gcpServiceAccount"]
    (role,) = by_kind(docs, "Role")
    assert not [r for r in role["rules"] if "secrets" in r["resources"]], "no object-store Secret on GKE"
    (job,) = by_kind(docs, "Job")
    compile_, schedule = pod_containers(job)
    for container in (compile_, schedule):
        params = [b for a, b in zip(container["args"], container["args"][1:]) if a == "--param"]
        assert "gcp_project=my-project" in params and "tpu_accelerator_type=v3-8" in params
    compile_opts = dict(zip(compile_["args"][2::2], compile_["args"][3::2]))
    assert compile_opts["--profile"] == "gcp"
    assert compile_opts["--pipeline-root"] == "gs://my-bertja-bucket/bert-japanese/pipeline-root"
    opts = dict(zip(schedule["args"][1::2], schedule["args"][2::2]))
    assert opts["--profile"] == "gcp"
    assert opts["--service-account"] == account["metadata"]["name"]
    (config_map,) = by_kind(docs, "ConfigMap")
    assert config_map["data"]["BERTJA_IMAGE_REGISTRY"] == "us-docker.pkg.dev/my-project/bertja"
    assert schedule["image"] == f"us-docker.pkg.dev/my-project/bertja/bertja-data:{images.version()}"


def test_parameters_reach_the_command_verbatim_never_through_a_shell():
    tricky = "a b; rm -rf / \"q\" 'x' $(HOME) $$ `id` 日本語"
    job = hook_job({"pipeline": {"parameters": {"release_uri": tricky}}})
    for container in pod_containers(job):
        assert container["command"] == ["bertja"]
        # One argument, byte for byte, with "$" doubled: Kubernetes turns "$$" back into "$"
        # and expands no "$(HOME)".
        assert "release_uri=" + tricky.replace("$", "$$") in container["args"]


def test_run_on_install_submits_after_compiling_and_nothing_without_actions():
    job = hook_job(GOOD_VALUES["multi-user, run on install, existing account"])
    names = [c["name"] for c in pod_containers(job)]
    assert names == ["compile", "submit"]
    submit = pod_containers(job)[1]["args"]
    assert dict(zip(submit[1::2], submit[2::2]))["--namespace"] == NAMESPACE
    assert job["spec"]["template"]["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    spec = job["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "team-runner"
    (token,) = [v for v in spec["volumes"] if v["name"] == "kfp-token"]
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"
    both = hook_job({"pipeline": {"runOnInstall": True}})
    assert [c["name"] for c in pod_containers(both)] == ["compile", "schedule", "submit"]
    idle = manifests({"schedule": {"enabled": False, "name": "x", "cron": "0 0 3 1 * *"}})
    assert not by_kind(idle, "Job")


@pytest.mark.parametrize("name", GOOD_VALUES)
def test_pods_run_as_non_root_with_a_read_only_root_filesystem(name):
    for job in workloads(manifests(GOOD_VALUES[name])):
        spec = pod_template(job)["spec"]
        # Pod Security Standard "restricted": non-root, RuntimeDefault seccomp, only ephemeral volumes.
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert {key for volume in spec["volumes"] for key in volume} - {"name"} <= {"emptyDir", "projected"}
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(spec)
        assert spec["automountServiceAccountToken"] is False
        for container in pod_containers(job):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp"}


def test_rbac_is_namespaced_and_least_privilege():
    docs = manifests({})
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    (role,) = by_kind(docs, "Role")
    (binding,) = by_kind(docs, "RoleBinding")
    (account,) = by_kind(docs, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}]
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert not {"create", "update", "patch", "delete"} & set(rule["verbs"]) or rule["resources"] == ["workflowtaskresults"]
        if {"secrets", "configmaps"} & set(rule["resources"]):
            assert rule["resourceNames"], "Secrets and ConfigMaps only by name"


def test_multi_user_binds_the_pipelines_edit_role_and_projects_the_token_kfp_reads():
    from kfp import client

    values = GOOD_VALUES["multi-user with RBAC, profile namespace and TPU janitor"]
    docs = manifests(values)
    (account,) = by_kind(docs, "ServiceAccount")
    (binding,) = [b for b in by_kind(docs, "RoleBinding") if b["roleRef"]["kind"] == "ClusterRole"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "kubeflow-pipelines-edit"}
    assert binding["metadata"]["namespace"] == "team-a", "the profile namespace, where KFP checks access"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}]
    assert not by_kind(docs, "ClusterRoleBinding")
    token_dir, token_file = client.KF_PIPELINES_SA_TOKEN_PATH.rsplit("/", 1)
    for workload in workloads(docs):
        spec = pod_template(workload)["spec"]
        (volume,) = [v for v in spec["volumes"] if v["name"] == "kfp-token"]
        (source,) = volume["projected"]["sources"]
        assert source["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"
        assert source["serviceAccountToken"]["path"] == token_file
        for container in pod_containers(workload):
            if container["name"] == "compile":
                continue
            assert {"name": "kfp-token", "mountPath": token_dir, "readOnly": True} in container["volumeMounts"]
            assert "--multi-user" in container["args"], container["name"]
    # Single-user: no token, no flag, no binding to Kubeflow's roles.
    single = manifests({"tpuJanitor": {"enabled": True, "project": "my-project", "zone": "us-central1-b"}})
    assert [b["roleRef"]["kind"] for b in by_kind(single, "RoleBinding")] == ["Role"]
    for workload in workloads(single):
        assert all(v["name"] != "kfp-token" for v in pod_template(workload)["spec"]["volumes"])
        assert all("--multi-user" not in c["args"] for c in pod_containers(workload))


def test_tpu_janitor_cronjob_runs_bertja_tpu_gc_in_the_tpu_image():
    assert not by_kind(manifests({}), "CronJob"), "off by default (kind has no TPUs)"
    docs = manifests(GOOD_VALUES["gke"])
    (cron,) = by_kind(docs, "CronJob")
    (account,) = by_kind(docs, "ServiceAccount")
    assert cron["spec"]["schedule"] == "*/30 * * * *" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = pod_template(cron)
    assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"], "Workload Identity for the TPU API"
    (container,) = pod_containers(cron)
    assert container["image"] == f"us-docker.pkg.dev/my-project/bertja/bertja-tpu-control:{images.version()}"
    assert container["command"] == ["bertja"] and container["args"][:2] == ["tpu", "gc"]
    opts = dict(zip(container["args"][2::2], container["args"][3::2]))
    # Project and zone: the pipeline parameters the train task creates its VMs with.
    assert opts == {"--project": "my-project", "--zone": "europe-west4-a",
                    "--kfp-endpoint": "http://ml-pipeline.kubeflow.svc.cluster.local:8888", "--min-age": "3600"}
    values = GOOD_VALUES["multi-user with RBAC, profile namespace and TPU janitor"]
    (cron,) = by_kind(manifests(values), "CronJob")
    (container,) = pod_containers(cron)
    assert container["args"][2:] == ["--project", "my-project", "--zone", "us-central1-b", "--kfp-endpoint",
                                     "http://ml-pipeline.kubeflow:8888", "--min-age", "7200", "--dry-run", "--multi-user"]
    assert pod_template(cron)["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}


SECRET_PATTERNS = re.compile(r"-----BEGIN|private_key|\"type\":\s*\"service_account\"|password|AKIA[0-9A-Z]{16}|ghp_[A-Za-z0-9]{20}", re.I)


@pytest.mark.parametrize("name", GOOD_VALUES)
def test_nothing_secret_is_rendered(name):
    rendered = render(GOOD_VALUES[name])
    docs = manifests(GOOD_VALUES[name])
    assert not by_kind(docs, "Secret")
    for path, text in rendered.items():
        assert not SECRET_PATTERNS.search(text), path
    for job in workloads(docs):
        for container in pod_containers(job):
            assert all("value" not in e for e in container.get("env", [])), "env comes from the ConfigMap"


BAD_VALUES = {
    "cron with five fields": ({"schedule": {"cron": "0 3 1 * *"}}, "/schedule/cron"),
    "cron with seven fields": ({"schedule": {"cron": "0 0 3 1 * * 2030"}}, "/schedule/cron"),
    "empty bucket": ({"gcs": {"bucket": ""}}, "/gcs/bucket"),
    "bucket given as a URI": ({"gcs": {"bucket": "gs://my-bucket"}}, "/gcs/bucket"),
    "gcp profile without a bucket": ({"pipeline": {"profile": "gcp", "parameters": {"gcp_project": "p"}}},
                                     "missing property 'gcs'"),
    "gcp profile without a project": ({"pipeline": {"profile": "gcp"}, "gcs": {"bucket": "my-bucket"}},
                                      "missing property 'gcp_project'"),
    "GPU profile without a bucket": ({"pipeline": {"profile": "gke-gpu", "parameters": {"gcp_project": "p"}}},
                                     "missing property 'gcs'"),
    "Vertex AI profile (no cluster runs it)": ({"pipeline": {"profile": "vertex"}}, "/pipeline/profile"),
    "pipeline root that is no URI": ({"pipeline": {"root": "/data/root"}}, "/pipeline/root"),
    "empty image tag": ({"image": {"tag": ""}}, "/image/tag"),
    "missing image tag": ({"image": {"tag": None}}, "missing property 'tag'"),
    "non-string parameter": ({"pipeline": {"parameters": {"vocab_size": 32768}}}, "/pipeline/parameters/vocab_size"),
    "bad Workload Identity account": ({"serviceAccount": {"gcpServiceAccount": "me@gmail.com"}}, "/serviceAccount/gcpServiceAccount"),
    "misspelt key": ({"schedul": {"cron": "0 0 3 1 * *"}}, "schedul"),
    "unknown pipeline parameter": ({"pipeline": {"parameters": {"wikipedia_dump": "latest"}}}, "wikipedia_dump"),
    "janitor cron with KFP's six fields": ({"tpuJanitor": {"schedule": "0 */30 * * * *"}}, "/tpuJanitor/schedule"),
    "janitor zone that is no zone": ({"tpuJanitor": {"zone": "europe-west4"}}, "/tpuJanitor/zone"),
    "janitor endpoint that is no URL": ({"tpuJanitor": {"kfpEndpoint": "ml-pipeline:8888"}}, "/tpuJanitor/kfpEndpoint"),
    "janitor with a negative minimum age": ({"tpuJanitor": {"minAgeSeconds": -1}}, "/tpuJanitor/minAgeSeconds"),
    "misspelt trainjob key": ({"trainjob": {"enable": True}}, "enable"),
    "no training runtime": ({"trainjob": {"runtimes": []}}, "/trainjob/runtimes"),
    "training runtime that is no name": ({"trainjob": {"runtimes": ["Torch Distributed"]}}, "/trainjob/runtimes/0"),
    "trainer namespace that is no name": ({"trainjob": {"trainerNamespace": "Kubeflow_System"}},
                                          "/trainjob/trainerNamespace"),
    "service account that is no name": ({"trainjob": {"serviceAccounts": ["Pipeline Runner"]}},
                                        "/trainjob/serviceAccounts/0"),
    "trainjob janitor cron with KFP's six fields": ({"trainjob": {"janitor": {"schedule": "0 */30 * * * *"}}},
                                                    "/trainjob/janitor/schedule"),
    "trainjob janitor endpoint that is no URL": ({"trainjob": {"janitor": {"kfpEndpoint": "ml-pipeline:8888"}}},
                                                 "/trainjob/janitor/kfpEndpoint"),
}


@pytest.mark.parametrize("name", BAD_VALUES)
def test_bad_values_fail_with_a_message_naming_the_value(name):
    values, expected = BAD_VALUES[name]
    with pytest.raises(helm.HelmValuesError) as caught:
        render(values)
    assert expected in str(caught.value)
    report = helm.lint(CHART, values, strict=True)
    assert report["errors"] or [m for m in report["messages"] if m["severity"] == 3]


@pytest.mark.parametrize("missing", ["project", "zone"])
def test_an_enabled_janitor_needs_to_know_where_the_tpu_vms_are(missing):
    janitor = {"enabled": True, "project": "my-project", "zone": "europe-west4-a"}
    del janitor[missing]
    with pytest.raises(helm.HelmRenderError, match=f"tpuJanitor.enabled needs tpuJanitor.{missing}"):
        render({"tpuJanitor": janitor})


@pytest.mark.parametrize("profile", ["gcp", "gke-gpu", "gke-trainjob"])
def test_gcs_profiles_with_a_non_gcs_root_fail_in_the_template(profile):
    with pytest.raises(helm.HelmRenderError, match=f"pipeline.profile {profile} needs a gs:// pipeline root"):
        render({"pipeline": {"profile": profile, "root": "minio://mlpipeline/v2", "parameters": {"gcp_project": "p"}},
                "gcs": {"bucket": "my-bucket"}, "trainjob": {"enabled": True}})


def test_the_chart_offers_exactly_the_profiles_a_cluster_runs_and_trainjobs_need_their_rbac():
    from pipelines import profiles

    with helm.Chart.load(CHART) as chart:
        offered = chart.schema["properties"]["pipeline"]["properties"]["profile"]["enum"]
    assert offered == [p.name for p in profiles.PROFILES.values() if p.platform.kubernetes], "run `make chart-sync`"
    assert "vertex" not in offered and {"gke-gpu", "gke-trainjob"} <= set(offered)
    values = {"pipeline": {"profile": "gke-trainjob", "parameters": {"gcp_project": "p"}}, "gcs": {"bucket": "my-bucket"}}
    with pytest.raises(helm.HelmRenderError, match="set trainjob.enabled=true"):
        render(values)
    (config_map,) = by_kind(manifests({**values, "trainjob": {"enabled": True}}), "ConfigMap")
    assert config_map["data"]["BERTJA_PROFILE"] == "gke-trainjob"


# ---------------------------------------------------------------------------
# The hook's commands, run for real (bertja compile + schedule) against a KFP API stand-in.
# ---------------------------------------------------------------------------

@pytest.fixture
def kfp_api():
    api = FakeKfpApi()
    yield api
    api.stop()


def run_container(container: dict, work: Path, endpoints: dict[str, str], config_map: dict | None = None,
                  extra_args: tuple = ()) -> subprocess.CompletedProcess:
    """Runs one rendered container's `bertja` command here, as the pod would (no shell).

    ``endpoints``: option -> local fake server URL. The projected KFP token is a file under
    ``work`` (``work/kfp-token``), found through KF_PIPELINES_SA_TOKEN_PATH as at its mount path.
    """
    import os

    env = dict(os.environ, HOME=str(work))
    env.pop("KF_PIPELINES_SA_TOKEN_PATH", None)
    for var in container.get("env", []):
        env[var["name"]] = config_map["data"][var["valueFrom"]["configMapKeyRef"]["key"]]
    for mount in container["volumeMounts"]:
        if mount["name"] == "kfp-token":
            env["KF_PIPELINES_SA_TOKEN_PATH"] = str(work / "kfp-token")
    args = [a.replace("/work/", f"{work}/").replace("$$", "$") for a in container["args"]]
    for option, url in endpoints.items():
        if option in args:
            args[args.index(option) + 1] = url
    assert container["command"] == ["bertja"]
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args, *extra_args], env=env, capture_output=True,
                          text=True, cwd=CHART.parent.parent, timeout=300)


def run_hook(values: dict, kfp_api: FakeKfpApi, work: Path) -> None:
    """Runs the rendered hook Job's containers in order."""
    docs = manifests(values)
    (config_map,) = by_kind(docs, "ConfigMap")
    (job,) = by_kind(docs, "Job")
    for container in pod_containers(job):
        result = run_container(container, work, {"--endpoint": kfp_api.endpoint}, config_map)
        assert result.returncode == 0, f"{container['name']}: {result.stderr[-3000:]}"


def test_hook_schedules_the_retrain_and_an_upgrade_replaces_it(kfp_api, tmp_path):
    values = {"image": {"registry": "registry.example.com/bertja", "tag": "9.9.9"},
              "pipeline": {"parameters": {"wikipedia_dump_date": "latest"}}}
    run_hook(values, kfp_api, tmp_path)
    run_hook(values, kfp_api, tmp_path)  # helm upgrade runs the hook again
    (recurring,) = kfp_api.recurring_runs.values()
    assert recurring["display_name"] == "bert-japanese-retrain"
    assert recurring["trigger"]["cron_schedule"]["cron"] == "0 0 3 1 * *"
    assert recurring["runtime_config"]["parameters"] == {"wikipedia_dump_date": "latest"}
    (experiment,) = kfp_api.experiments.values()
    assert experiment["display_name"] == "bert-japanese"
    spec = recurring["pipeline_spec"]
    spec = spec.get("pipeline_spec", spec)
    used = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    # The pipeline runs the chart's images, not the compile-time defaults.
    assert used == {f"registry.example.com/bertja/{images.IMAGES[key][0]}:9.9.9" for key in images.cluster_images()}
    # What the server stores still caches every step but the ones that ask "which dump is latest?" and
    # "what is JGLUE's content now?" (and the exit task that releases compute), so the monthly retrain on an unchanged dump is cache hits.
    uncached = {name for name, task in all_tasks(spec)
                if "executorLabel" in spec["components"][task["componentRef"]["name"]]
                and not task.get("cachingOptions", {}).get("enableCache")}
    assert "resolve-sources" in uncached and uncached <= {"resolve-sources", "jglue-identity", "release-compute"}


def all_tasks(node):
    """Every (name, task) pair anywhere in a pipeline spec."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "tasks":
                yield from value.items()
            yield from all_tasks(value)
    elif isinstance(node, list):
        for value in node:
            yield from all_tasks(value)


def test_hook_with_gke_values_compiles_for_gcs_and_tpu(kfp_api, tmp_path):
    values = dict(GOOD_VALUES["gke"])
    # `bertja schedule --service-account` is not there yet (see the chart's pipeline.useChartServiceAccount).
    values["pipeline"] = dict(values["pipeline"], useChartServiceAccount=False)
    run_hook(values, kfp_api, tmp_path)
    (recurring,) = kfp_api.recurring_runs.values()
    assert recurring["runtime_config"]["parameters"]["gcp_project"] == "my-project"
    compiled = yaml.safe_load_all((tmp_path / "pipeline.yaml").read_text(encoding="utf-8"))
    spec = next(compiled)
    assert spec["defaultPipelineRoot"] == "gs://my-bertja-bucket/bert-japanese/pipeline-root"
    used = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert {u.rsplit("/", 1)[0] for u in used} == {"us-docker.pkg.dev/my-project/bertja"}


def test_multi_user_hook_authenticates_with_the_projected_token(tmp_path):
    """Multi-user KFP refuses requests without the service account's identity; the hook sends it."""
    token = "projected.sa.token"
    (tmp_path / "kfp-token").write_text(token + "\n")
    api = FakeKfpApi(multi_user=True, token=token)
    try:
        values = GOOD_VALUES["multi-user with RBAC, profile namespace and TPU janitor"]
        run_hook(values, api, tmp_path)
        run_hook(values, api, tmp_path)  # helm upgrade: replaced, not duplicated
        (recurring,) = api.recurring_runs.values()
        assert recurring["display_name"] == "bert-japanese-retrain"
        assert {r["authorization"] for r in api.requests} == {f"Bearer {token}"}
        assert api.calls("DELETE")[0]["query"] == {"propagation_policy": ["ORPHAN"]}
    finally:
        api.stop()


def test_the_janitor_cronjob_command_runs_against_the_apis(tmp_path):
    """The rendered CronJob's arguments, run as the pod would, against a fake TPU API and KFP API."""
    import json
    import uuid

    from fake_tpu_server import FakeTpuServer

    from components.tpu.control import NodeSpec, TpuControl

    values = GOOD_VALUES["multi-user with RBAC, profile namespace and TPU janitor"]
    (cron,) = by_kind(manifests(values), "CronJob")
    (container,) = pod_containers(cron)
    (tmp_path / "kfp-token").write_text("t0ken")
    tpu = FakeTpuServer(create_s=0.05, delete_s=0.05).start()
    api = FakeKfpApi(multi_user=True, token="t0ken")
    try:
        finished = str(uuid.uuid4())
        api.add_run(finished, "SUCCEEDED")
        TpuControl("my-project", "us-central1-b", api_endpoint=tpu.endpoint, poll_s=0.02).create_node(
            "bertja-old", NodeSpec(labels={"bertja-run": finished, "bertja-variant": "character",
                                          "bertja-backend": "kfp"}), timeout_s=30)
        path = "projects/my-project/locations/us-central1-b/nodes/bertja-old"
        tpu.backdate(path, 7201)
        result = run_container(container, tmp_path, {"--kfp-endpoint": api.endpoint},
                               extra_args=("--api-endpoint", tpu.endpoint, "--poll", "0.02"))
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["dry_run"] is True and [e["name"] for e in summary["would_delete"]] == ["bertja-old"]
        assert "bertja-old" in result.stderr and "would delete (dry run)" in result.stderr
        assert tpu.node_state(path) == "READY"
    finally:
        tpu.stop()
        api.stop()


# ---------------------------------------------------------------------------
# Kubeflow Trainer TrainJobs: the RBAC against the requests the kubeflow client really sends.
# ---------------------------------------------------------------------------

TRAINJOBS_ON = {"trainjob": {"enabled": True, "serviceAccounts": ["pipeline-runner"], "janitor": {"enabled": True}}}
# What the kubeflow 0.5 client and our control code send (tests/fake_k8s_api.py serves each):
# (verb, resource, namespace or None for cluster-scoped).
TRAINJOB_API = {("get", "configmaps", "kubeflow-system"), ("get", "trainingruntimes", NAMESPACE),
                ("get", "clustertrainingruntimes", None), ("create", "trainjobs", NAMESPACE),
                ("get", "trainjobs", NAMESPACE), ("list", "trainjobs", NAMESPACE), ("delete", "trainjobs", NAMESPACE),
                ("list", "pods", NAMESPACE), ("get", "pods/log", NAMESPACE)}


def api_request(method: str, path: str) -> dict:
    """A Kubernetes API request's RBAC attributes (what the API server's authorizer sees)."""
    m = (re.fullmatch(r"/api/v1(?:/namespaces/(?P<ns>[^/]+))?/(?P<res>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?",
                      path)
         or re.fullmatch(r"/apis/(?P<group>[^/]+)/[^/]+(?:/namespaces/(?P<ns>[^/]+))?/(?P<res>[^/]+)"
                         r"(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?", path))
    assert m, path
    verb = {"POST": "create", "DELETE": "delete" if m["name"] else "deletecollection",
            "GET": "get" if m["name"] else "list"}[method]
    return {"group": m.groupdict().get("group") or "", "namespace": m["ns"], "name": m["name"], "verb": verb,
            "resource": m["res"] + (f"/{m['sub']}" if m["sub"] else "")}


def grants(docs: list[dict], account: str, request: dict) -> set[tuple]:
    """The (role kind, role name, rule index, verb, resource) grants that allow ``request`` for the
    service account ``account`` of the release namespace, evaluated as Kubernetes RBAC does: a
    RoleBinding grants in its namespace only, a ClusterRoleBinding everywhere; resourceNames limit
    requests that name an object."""
    subject = {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    found = set()
    for binding in by_kind(docs, "RoleBinding") + by_kind(docs, "ClusterRoleBinding"):
        if subject not in binding["subjects"]:
            continue
        if binding["kind"] == "RoleBinding" and request["namespace"] != binding["metadata"]["namespace"]:
            continue
        ref = binding["roleRef"]
        roles = [r for r in by_kind(docs, ref["kind"]) if r["metadata"]["name"] == ref["name"]
                 and (ref["kind"] == "ClusterRole" or r["metadata"]["namespace"] == binding["metadata"]["namespace"])]
        for role in roles:
            for i, rule in enumerate(role["rules"]):
                names = rule.get("resourceNames")
                if (request["group"] in rule["apiGroups"] and request["resource"] in rule["resources"]
                        and request["verb"] in rule["verbs"] and (not names or request["name"] in names)):
                    found.add((role["kind"], role["metadata"]["name"], i, request["verb"], request["resource"]))
    return found


def trainjob_grants(docs: list[dict]) -> set[tuple]:
    """Every (role kind, name, rule index, verb, resource) the chart's TrainJob roles grant."""
    return {(role["kind"], role["metadata"]["name"], i, verb, resource)
            for role in by_kind(docs, "Role") + by_kind(docs, "ClusterRole")
            if role["metadata"]["labels"].get("app.kubernetes.io/component") == "trainjob"
            for i, rule in enumerate(role["rules"]) for verb in rule["verbs"] for resource in rule["resources"]}


@pytest.fixture
def k8s_api():
    pytest.importorskip("kubeflow.trainer")
    from fake_k8s_api import FakeKubernetesApi

    api = FakeKubernetesApi(phase_s=0.2).start()
    yield api
    api.stop()


def test_trainjob_rbac_covers_exactly_what_the_client_calls(k8s_api, tmp_path):
    """The control step's whole lifecycle (a job that fails: its log is read, then it is deleted)
    and the rendered janitor's `bertja trainjob gc`, through the real kubeflow client against the
    stand-in API: every request is allowed by the rendered RBAC, for the chart's account and the
    extra one, every TrainJob grant is used by some request, and without the flag none is there."""
    from components.torch_train import trainjob

    docs = manifests(TRAINJOBS_ON)
    control = trainjob.TrainJobControl(NAMESPACE, api_server=k8s_api.endpoint, poll_s=0.05)
    command = trainjob.trainer_command(plan="bert", data=["gs://b/d"], model_dir="gs://b/m", tokenizer_dir="gs://b/t")
    failing = trainjob.JobSpec(name="bj-fails", image="img:1", command=tuple(command))
    k8s_api.outcomes["bj-fails"] = ("Failed", "JobSetFailed", "node-0 exit 1")
    k8s_api.logs["bj-fails"] = "RuntimeError: boom\n"
    with pytest.raises(trainjob.TrainJobFailed):
        trainjob.train_on_trainjob(control, failing, model_dir=str(tmp_path / "m"))

    (cron,) = [c for c in by_kind(docs, "CronJob") if c["metadata"]["name"].endswith("-trainjob-gc")]
    (container,) = pod_containers(cron)
    kfp = FakeKfpApi()
    try:
        kfp.add_run("run-done", "SUCCEEDED")
        leftover = trainjob.JobSpec(name=trainjob.trainjob_name("run-done", "base"), image="img:1",
                                    command=tuple(command), labels=trainjob.run_labels("run-done", "base", "kfp"))
        control.create(leftover)
        k8s_api.jobs[(NAMESPACE, leftover.name)]["metadata"]["creationTimestamp"] = "2020-01-01T00:00:00Z"
        result = run_container(container, tmp_path, {"--kfp-endpoint": kfp.endpoint},
                               extra_args=("--api-server", k8s_api.endpoint, "--poll", "0.05"))
    finally:
        kfp.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    assert [d["name"] for d in json.loads(result.stdout)["deleted"]] == [leftover.name] and not k8s_api.jobs

    requests = [api_request(method, path) for method, path, _code in k8s_api.requests]
    assert {(r["verb"], r["resource"], r["namespace"]) for r in requests} == TRAINJOB_API
    account = next(a["metadata"]["name"] for a in by_kind(docs, "ServiceAccount"))
    for who in (account, "pipeline-runner"):
        used = set()
        for request in requests:
            allowed = grants(docs, who, request)
            assert allowed, f"{who} may not {request}"
            used |= allowed
        assert trainjob_grants(docs) <= used, f"granted but never used: {trainjob_grants(docs) - used}"
    assert not grants(docs, "default", api_request("POST", f"/apis/trainer.kubeflow.org/v1/namespaces/{NAMESPACE}/trainjobs"))

    without = manifests({})
    assert not trainjob_grants(without)
    for request in requests:
        if request["resource"] != "pods":  # the step pods' own Role lists pods
            assert not grants(without, account, request), request


def test_trainjob_rbac_names_runtimes_and_the_configmap_and_needs_rbac_create():
    values = GOOD_VALUES["TrainJobs with their janitor, also for KFP standalone's runner"]
    docs = manifests(values)
    (cluster_role,) = by_kind(docs, "ClusterRole")
    assert cluster_role["rules"] == [{"apiGroups": ["trainer.kubeflow.org"], "resources": ["clustertrainingruntimes"],
                                      "resourceNames": ["torch-distributed", "torch-h100"], "verbs": ["get"]}]
    (cluster_binding,) = by_kind(docs, "ClusterRoleBinding")
    assert [s["name"] for s in cluster_binding["subjects"]] == [f"{RELEASE}-bert-japanese-pipelines", "pipeline-runner"]
    assert cluster_role["metadata"]["name"].startswith(f"{NAMESPACE}-"), "one per release namespace"
    (trainer_role,) = [r for r in by_kind(docs, "Role") if r["metadata"]["namespace"] == "kubeflow-system"]
    assert trainer_role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                                      "resourceNames": ["kubeflow-trainer-public"], "verbs": ["get"]}]
    for role in by_kind(docs, "Role") + by_kind(docs, "ClusterRole"):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
            assert "watch" not in rule["verbs"] or role["metadata"]["labels"].get("app.kubernetes.io/component") != "trainjob"
    quiet = manifests({"trainjob": {"enabled": True, "trainerNamespace": ""}})
    assert {r["metadata"]["namespace"] for r in by_kind(quiet, "Role")} == {NAMESPACE}
    unmanaged = manifests({"rbac": {"create": False}, "trainjob": {"enabled": True, "janitor": {"enabled": True}}})
    assert not by_kind(unmanaged, "Role") and not by_kind(unmanaged, "ClusterRole")
    assert [c["metadata"]["name"] for c in by_kind(unmanaged, "CronJob")] == [f"{RELEASE}-bert-japanese-pipelines-trainjob-gc"]


def test_the_trainjob_janitor_needs_the_trainjob_flag():
    with pytest.raises(helm.HelmRenderError, match="trainjob.janitor.enabled needs trainjob.enabled"):
        render({"trainjob": {"janitor": {"enabled": True}}})


def test_trainjob_janitor_gets_a_projected_api_token_where_the_in_cluster_client_reads_it():
    from kubernetes.config import incluster_config

    values = {"kfp": {"multiUser": True}, "trainjob": {"enabled": True, "janitor": {"enabled": True}},
              "tpuJanitor": {"enabled": True, "project": "my-project", "zone": "us-central1-b"}}
    crons = {c["metadata"]["labels"]["app.kubernetes.io/component"]: c for c in by_kind(manifests(values), "CronJob")}
    assert set(crons) == {"tpu-gc", "trainjob-gc"}
    (container,) = pod_containers(crons["trainjob-gc"])
    assert container["image"] == images.image("tpu", registry=images.REGISTRY, tag=images.version())
    assert container["args"] == ["trainjob", "gc", "--namespace", NAMESPACE, "--kfp-endpoint",
                                 "http://ml-pipeline.kubeflow.svc.cluster.local:8888", "--min-age", "3600", "--multi-user"]
    spec = pod_template(crons["trainjob-gc"])["spec"]
    assert spec["automountServiceAccountToken"] is False
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "kube-api-token"]
    assert mount["readOnly"] and mount["mountPath"] == str(Path(incluster_config.SERVICE_TOKEN_FILENAME).parent)
    (volume,) = [v for v in spec["volumes"] if v["name"] == "kube-api-token"]
    files = {item["path"] for source in volume["projected"]["sources"] for kind, s in source.items()
             for item in ([s] if kind == "serviceAccountToken" else s["items"])}
    # token and CA for the kubernetes client; namespace for kubeflow's default namespace.
    assert {f"{mount['mountPath']}/{f}" for f in files} == {incluster_config.SERVICE_TOKEN_FILENAME,
                                                            incluster_config.SERVICE_CERT_FILENAME,
                                                            f"{mount['mountPath']}/namespace"}
    assert "audience" not in volume["projected"]["sources"][0]["serviceAccountToken"], "the API server's audience"
    assert {"name": "kfp-token", "mountPath": "/var/run/secrets/kubeflow/pipelines", "readOnly": True} in container["volumeMounts"]
    # The TPU janitor talks to Google and KFP only.
    assert all(v["name"] != "kube-api-token" for v in pod_template(crons["tpu-gc"])["spec"]["volumes"])

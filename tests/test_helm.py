"""The Helm chart, rendered and linted by a real Helm engine (helm-python-sdk, offline), every
manifest validated strictly against the Kubernetes schemas, and bad values refused."""

from __future__ import annotations

import re
from pathlib import Path

import helm_python as helm
import kubernetes_validate.utils as kv
import pytest
import yaml

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
    "multi-user, run on install, existing account": {
        "serviceAccount": {"create": False, "name": "team-runner"},
        "rbac": {"create": False},
        "kfp": {"endpoint": "https://kubeflow.example.com/pipeline", "multiUser": True},
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


def pod_containers(job: dict) -> list[dict]:
    spec = job["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


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
    assert compile_["args"][:4] == ["compile", "/work/pipeline.yaml", "--profile", "kind"]
    args = schedule["args"]
    assert args[0] == "schedule"
    opts = dict(zip(args[1::2], args[2::2]))
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
        assert "pipeline_root=gs://my-bertja-bucket/bert-japanese/pipeline-root" in params
        assert "gcp_project=my-project" in params and "tpu_accelerator_type=v3-8" in params
    assert compile_["args"][3] == "gcp"
    opts = dict(zip(schedule["args"][1::2], schedule["args"][2::2]))
    assert opts["--service-account"] == account["metadata"]["name"]
    (config_map,) = by_kind(docs, "ConfigMap")
    assert config_map["data"]["BERTJA_IMAGE_REGISTRY"] == "us-docker.pkg.dev/my-project/bertja"
    assert schedule["image"] == f"us-docker.pkg.dev/my-project/bertja/bertja-data:{images.version()}"


def test_parameters_reach_the_command_verbatim_never_through_a_shell():
    tricky = "a b; rm -rf / \"q\" 'x' $(HOME) $$ `id` 日本語"
    job = hook_job({"pipeline": {"parameters": {"note": tricky}}})
    for container in pod_containers(job):
        assert container["command"] == ["bertja"]
        # One argument, byte for byte, with "$" doubled: Kubernetes turns "$$" back into "$"
        # and expands no "$(HOME)".
        assert "note=" + tricky.replace("$", "$$") in container["args"]


def test_run_on_install_submits_after_compiling_and_nothing_without_actions():
    job = hook_job(GOOD_VALUES["multi-user, run on install, existing account"])
    names = [c["name"] for c in pod_containers(job)]
    assert names == ["compile", "submit"]
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
    for job in by_kind(manifests(GOOD_VALUES[name]), "Job"):
        spec = job["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec["automountServiceAccountToken"] is False
        for container in pod_containers(job):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp", "/work"}


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


SECRET_PATTERNS = re.compile(r"-----BEGIN|private_key|\"type\":\s*\"service_account\"|password|AKIA[0-9A-Z]{16}|ghp_[A-Za-z0-9]{20}", re.I)


@pytest.mark.parametrize("name", GOOD_VALUES)
def test_nothing_secret_is_rendered(name):
    rendered = render(GOOD_VALUES[name])
    docs = manifests(GOOD_VALUES[name])
    assert not by_kind(docs, "Secret")
    for path, text in rendered.items():
        assert not SECRET_PATTERNS.search(text), path
    for job in by_kind(docs, "Job"):
        for container in pod_containers(job):
            assert all("value" not in e for e in container.get("env", [])), "env comes from the ConfigMap"


BAD_VALUES = {
    "cron with five fields": ({"schedule": {"cron": "0 3 1 * *"}}, "/schedule/cron"),
    "cron with seven fields": ({"schedule": {"cron": "0 0 3 1 * * 2030"}}, "/schedule/cron"),
    "empty bucket": ({"gcs": {"bucket": ""}}, "/gcs/bucket"),
    "bucket given as a URI": ({"gcs": {"bucket": "gs://my-bucket"}}, "/gcs/bucket"),
    "gcp profile without a bucket": ({"pipeline": {"profile": "gcp"}}, "missing property 'gcs'"),
    "empty image tag": ({"image": {"tag": ""}}, "/image/tag"),
    "missing image tag": ({"image": {"tag": None}}, "missing property 'tag'"),
    "non-string parameter": ({"pipeline": {"parameters": {"vocab_size": 32768}}}, "/pipeline/parameters/vocab_size"),
    "bad Workload Identity account": ({"serviceAccount": {"gcpServiceAccount": "me@gmail.com"}}, "/serviceAccount/gcpServiceAccount"),
    "misspelt key": ({"schedul": {"cron": "0 0 3 1 * *"}}, "schedul"),
}


@pytest.mark.parametrize("name", BAD_VALUES)
def test_bad_values_fail_with_a_message_naming_the_value(name):
    values, expected = BAD_VALUES[name]
    with pytest.raises(helm.HelmValuesError) as caught:
        render(values)
    assert expected in str(caught.value)
    report = helm.lint(CHART, values, strict=True)
    assert report["errors"] or [m for m in report["messages"] if m["severity"] == 3]


def test_gcp_profile_with_a_non_gcs_root_fails_in_the_template():
    with pytest.raises(helm.HelmRenderError, match="gs:// pipeline root"):
        render({"pipeline": {"profile": "gcp", "root": "minio://mlpipeline/v2"}, "gcs": {"bucket": "my-bucket"}})

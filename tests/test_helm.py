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
    for job in by_kind(manifests(GOOD_VALUES[name]), "Job"):
        spec = job["spec"]["template"]["spec"]
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
    "gcp profile without a bucket": ({"pipeline": {"profile": "gcp", "parameters": {"gcp_project": "p"}}},
                                     "missing property 'gcs'"),
    "gcp profile without a project": ({"pipeline": {"profile": "gcp"}, "gcs": {"bucket": "my-bucket"}},
                                      "missing property 'gcp_project'"),
    "pipeline root that is no URI": ({"pipeline": {"root": "/data/root"}}, "/pipeline/root"),
    "empty image tag": ({"image": {"tag": ""}}, "/image/tag"),
    "missing image tag": ({"image": {"tag": None}}, "missing property 'tag'"),
    "non-string parameter": ({"pipeline": {"parameters": {"vocab_size": 32768}}}, "/pipeline/parameters/vocab_size"),
    "bad Workload Identity account": ({"serviceAccount": {"gcpServiceAccount": "me@gmail.com"}}, "/serviceAccount/gcpServiceAccount"),
    "misspelt key": ({"schedul": {"cron": "0 0 3 1 * *"}}, "schedul"),
    "unknown pipeline parameter": ({"pipeline": {"parameters": {"wikipedia_dump": "latest"}}}, "wikipedia_dump"),
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
        render({"pipeline": {"profile": "gcp", "root": "minio://mlpipeline/v2", "parameters": {"gcp_project": "p"}},
                "gcs": {"bucket": "my-bucket"}})


# ---------------------------------------------------------------------------
# The hook's commands, run for real (bertja compile + schedule) against a KFP API stand-in.
# ---------------------------------------------------------------------------

class FakeKfpApi:
    """The slice of the KFP v2beta1 REST API that `bertja schedule` uses, on 127.0.0.1."""

    def __init__(self):
        import itertools
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs, urlparse

        self.experiments: dict[str, dict] = {}
        self.recurring_runs: dict[str, dict] = {}
        ids = itertools.count(1)
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, body: dict, status: int = 200):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def body(self) -> dict:
                return json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")

            def do_GET(self):
                url = urlparse(self.path)
                query = parse_qs(url.query)
                if url.path == "/apis/v2beta1/healthz":
                    return self.reply({"multi_user": False})
                if url.path == "/apis/v2beta1/experiments":
                    wanted = json.loads(query["filter"][0])["predicates"][0]["stringValue"]
                    found = [e for e in api.experiments.values() if e["display_name"] == wanted]
                    return self.reply({"experiments": found, "total_size": len(found)})
                if url.path == "/apis/v2beta1/recurringruns":
                    experiment = query.get("experiment_id", [None])[0]
                    runs = [r for r in api.recurring_runs.values() if r["experiment_id"] == experiment]
                    return self.reply({"recurringRuns": runs, "total_size": len(runs), "next_page_token": ""})
                self.reply({"error": self.path}, 404)

            def do_POST(self):
                body = self.body()
                if self.path == "/apis/v2beta1/experiments":
                    body["experiment_id"] = f"exp-{next(ids)}"
                    api.experiments[body["experiment_id"]] = body
                    return self.reply(body)
                if self.path == "/apis/v2beta1/recurringruns":
                    body["recurring_run_id"] = f"rr-{next(ids)}"
                    api.recurring_runs[body["recurring_run_id"]] = body
                    return self.reply(body)
                self.reply({"error": self.path}, 404)

            def do_DELETE(self):
                run_id = self.path.rsplit("/", 1)[-1]
                if api.recurring_runs.pop(run_id, None) is None:
                    return self.reply({"error": run_id}, 404)
                self.reply({})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def kfp_api():
    api = FakeKfpApi()
    yield api
    api.server.shutdown()


def run_hook(values: dict, kfp_api: FakeKfpApi, work: Path) -> None:
    """Runs the rendered hook Job's containers in order, as the pod would (no shell)."""
    import os

    docs = manifests(values)
    (config_map,) = by_kind(docs, "ConfigMap")
    (job,) = by_kind(docs, "Job")
    for container in pod_containers(job):
        env = dict(os.environ, HOME=str(work))
        for var in container.get("env", []):
            env[var["name"]] = config_map["data"][var["valueFrom"]["configMapKeyRef"]["key"]]
        args = [a.replace("/work/", f"{work}/").replace("$$", "$") for a in container["args"]]
        if "--endpoint" in args:
            args[args.index("--endpoint") + 1] = kfp_api.endpoint
        result = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], env=env, capture_output=True,
                                text=True, cwd=CHART.parent.parent, timeout=300)
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
    # What the server stores still caches every step but the one that asks "which dump is latest?"
    # (and the exit task that releases compute), so the monthly retrain on an unchanged dump is cache hits.
    uncached = {name for name, task in all_tasks(spec)
                if "executorLabel" in spec["components"][task["componentRef"]["name"]]
                and not task.get("cachingOptions", {}).get("enableCache")}
    assert "resolve-sources" in uncached and uncached <= {"resolve-sources", "release-compute"}


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

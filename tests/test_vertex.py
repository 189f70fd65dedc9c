"""The vertex profile: a pipeline YAML that Vertex AI Pipelines loads.

Checked with google-cloud-aiplatform's own loader and ``PipelineJob`` (built offline: a project,
a location and anonymous credentials; nothing is sent)."""

from __future__ import annotations

import pytest
import yaml

from pipelines import profiles
from pipelines.cli import main as bertja

ROOT = "gs://my-bertja-bucket/bert-japanese/pipeline-root"


def _compile(tmp_path, profile: str) -> str:
    out = str(tmp_path / f"{profile}.yaml")
    assert bertja(["compile", out, "--profile", profile, "--pipeline-root", ROOT]) == 0
    return out


@pytest.fixture(scope="module")
def vertex_yaml(tmp_path_factory) -> str:
    return _compile(tmp_path_factory.mktemp("vertex"), "vertex")


def _job(template_path: str, **parameter_values):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform

    return aiplatform.PipelineJob(display_name="bert-japanese", template_path=template_path,
                                  project="my-project", location="europe-west4",
                                  credentials=AnonymousCredentials(), parameter_values=parameter_values,
                                  enable_caching=True)


def test_the_vertex_profile_writes_one_document_with_cpu_and_memory_limits(vertex_yaml):
    with open(vertex_yaml, encoding="utf-8") as f:
        docs = list(yaml.safe_load_all(f))
    assert len(docs) == 1 and "platforms" not in docs[0]
    executors = docs[0]["deploymentSpec"]["executors"].values()
    sizes = {(r["resourceCpuLimit"], r["resourceMemoryLimit"]) for r in (e["container"]["resources"] for e in executors)}
    gcp = {(res.cpu, res.memory) for res in profiles.PROFILES["gcp"].platform.resources.values()}
    assert sizes == gcp  # the gcp profile's machines, as limits (what Vertex sizes a machine from)
    assert all("cpuRequest" not in e["container"]["resources"] for e in executors)


def test_vertex_ai_loads_it_and_builds_a_pipeline_job(vertex_yaml):
    job = _job(vertex_yaml, gcp_project="my-project", cc100_num_shards=4, tpu_queued=True)
    resource = job._gca_resource
    assert resource.runtime_config.gcs_output_directory == ROOT
    assert dict(resource.runtime_config.parameter_values) == {
        "gcp_project": "my-project", "cc100_num_shards": 4, "tpu_queued": True}
    defaults = resource.pipeline_spec["root"]["inputDefinitions"]["parameters"]
    assert defaults["training_backend"]["defaultValue"] == "tpu"  # the profile's value
    assert resource.pipeline_spec["pipelineInfo"]["name"] == "bert-japanese-pretraining"
    with pytest.raises(ValueError, match="not_a_parameter"):  # the loader checks names against our spec
        _job(vertex_yaml, not_a_parameter=1)


def test_the_gcp_profile_is_what_vertex_cannot_load(tmp_path):
    """Why the vertex profile exists: kfp-kubernetes adds a second YAML document."""
    with pytest.raises(yaml.composer.ComposerError, match="single document"):
        _job(_compile(tmp_path, "gcp"), gcp_project="my-project")


def test_the_vertex_profile_needs_a_gcs_root(tmp_path, capsys):
    assert bertja(["compile", str(tmp_path / "p.yaml"), "--profile", "vertex"]) == 2
    assert "--pipeline-root gs://" in capsys.readouterr().err


def test_a_profile_without_kubernetes_cannot_carry_kubernetes_settings():
    with pytest.raises(ValueError, match="node_selector"):
        profiles.Platform(kubernetes=False, node_selector={"pool": "cpu"})
    with pytest.raises(ValueError, match="timeout_s"):
        profiles.Platform(kubernetes=False, resources={"data": profiles.Resources("1", "1Gi", timeout_s=60)})

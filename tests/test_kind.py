"""The kind workflow (deploy/kind.sh, Makefile): no Docker here, so what is checked is every command
it would run (printed with --dry-run / PRINT=1) and the pipeline it compiles for the kind profile."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components import images

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "kind.sh"


def planned(*args: str, env: dict | None = None, make: bool = False) -> list[list[str]]:
    """The commands the script would run, each as an argv list."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("KIND_", "KFP_", "BERTJA_"))}
    full_env.update(PYTHON=sys.executable, **(env or {}))
    argv = ["make", "-s", *args, "PRINT=1", f"PYTHON={sys.executable}"] if make else [str(SCRIPT), "--dry-run", *args]
    result = subprocess.run(argv, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [shlex.split(line[2:]) for line in result.stdout.splitlines() if line.startswith("+ ")]


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_the_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    assert os.access(SCRIPT, os.X_OK)


def test_up_creates_a_pinned_cluster_and_installs_a_pinned_kfp_release():
    commands = planned("up")
    create = commands[0]
    assert create[:3] == ["kind", "create", "cluster"]
    assert re.fullmatch(r"kindest/node:v\d+\.\d+\.\d+", option(create, "--image"))
    applies = [c for c in commands if c[:3] == ["kubectl", "--context", "kind-bertja"] and "apply" in c]
    refs = [option(c, "-k") for c in applies]
    assert [r.split("?")[0].rsplit("/", 2)[-2:] for r in refs] == [["kustomize", "cluster-scoped-resources"],
                                                                    ["env", "platform-agnostic"]]
    versions = {r.split("?ref=")[1] for r in refs}
    assert len(versions) == 1 and re.fullmatch(r"\d+\.\d+\.\d+", versions.pop()), refs
    # CRDs established before the rest; every deployment Available at the end.
    waits = [c for c in commands if "wait" in c]
    assert waits[0][-1] == "crd/applications.app.k8s.io" and option(waits[0], "--for") == "condition=established"
    assert commands.index(applies[0]) < commands.index(waits[0]) < commands.index(applies[1])
    assert commands[-1][-2:] == ["deployment", "--all"] and option(commands[-1], "--for") == "condition=Available"
    # Never the user's current context: every kubectl names the kind cluster.
    assert all(option(c, "--context") == "kind-bertja" for c in commands if c[0] == "kubectl")


# A kubeflow/pipelines tag that exists (2.17.1 was announced, but no tag could be confirmed) and has
# the launcher fix the {uri}_data/ artifact layout needs (kubeflow/pipelines#12928, first in 2.17.0).
KFP_RELEASE = "2.17.0"


def test_kfp_is_pinned_to_a_confirmed_release_the_same_in_script_and_readme():
    refs = {c.split("?ref=")[1] for cmd in planned("up") for c in cmd if "?ref=" in c}
    assert refs == {KFP_RELEASE}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.findall(r"^export PIPELINE_VERSION=(\S+)", readme, re.M) == [KFP_RELEASE]
    assert re.findall(r"KFP standalone (\d+\.\d+\.\d+)", readme) == [KFP_RELEASE]
    assert "kubeflow/pipelines#12928" in readme


@pytest.mark.parametrize("version, message", [("2.16.1", "needs KFP >= 2.17.0"), ("2.15.0", "needs KFP >= 2.17.0"),
                                              ("master", "expected a KFP release tag")])
def test_a_kfp_older_than_the_launcher_fix_is_refused_before_anything_runs(version, message):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIND_", "KFP_"))}
    result = subprocess.run([str(SCRIPT), "--dry-run", "up"], cwd=ROOT, env={**env, "KFP_VERSION": version},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr
    assert result.stdout == ""  # not even the cluster


def test_images_are_built_from_components_images_and_loaded_into_kind():
    commands = planned("images")
    builds = [c for c in commands if c[:2] == ["docker", "build"]]
    loads = [c for c in commands if c[:3] == ["kind", "load", "docker-image"]]
    # The images pods run; the TPU VM trainer is never built for (or loaded into) a CPU cluster.
    assert "train" in images.cluster_images() and "train-tpu" not in images.cluster_images()
    expected = {images.image(key): images.dockerfile(key) for key in images.cluster_images()}
    assert {option(b, "--tag"): option(b, "--file") for b in builds} == expected
    assert all(option(b, "--build-arg") == f"BERTJA_VERSION={images.version()}" and b[-1] == "." for b in builds)
    assert all((ROOT / option(b, "--file")).is_file() for b in builds)
    assert {load[3] for load in loads} == set(expected)
    assert all(option(load, "--name") == "bertja" for load in loads)


def test_build_makes_every_image_including_the_tpu_trainer():
    builds = [c for c in planned("build") if c[:2] == ["docker", "build"]]
    assert {option(b, "--tag"): option(b, "--file") for b in builds} == {
        images.image(key): images.dockerfile(key) for key in images.IMAGES}
    assert images.dockerfile("train-tpu") in [option(b, "--file") for b in builds]


def test_push_sends_every_image_to_the_configured_registry():
    commands = planned("push", env={"BERTJA_IMAGE_REGISTRY": "us-docker.pkg.dev/my-project/bertja"})
    assert commands == [["docker", "push", images.image(key, registry="us-docker.pkg.dev/my-project/bertja")]
                        for key in images.IMAGES]


def test_install_uses_the_chart_with_kind_values_and_the_image_version():
    (install,) = planned("install")
    assert install[:4] == ["helm", "upgrade", "--install", "bertja"]
    chart = ROOT / install[4]
    assert (chart / "Chart.yaml").is_file()
    values = ROOT / option(install, "--values")
    assert values.is_file() and yaml.safe_load(values.read_text())["pipeline"]["profile"] == "kind"
    assert option(install, "--set-string") == f"image.tag={images.version()}"
    assert option(install, "--kube-context") == "kind-bertja" and option(install, "--namespace") == "kubeflow"
    assert "--wait" in install


def test_run_compiles_the_kind_profile_and_submits_it():
    commands = planned("run")
    (compile_,) = [c for c in commands if "compile" in c]
    (submit,) = [c for c in commands if "submit" in c]
    (forward,) = [c for c in commands if "port-forward" in c]
    assert compile_[:3] == [sys.executable, "-m", "pipelines.cli"]
    assert option(compile_, "--profile") == "kind"
    assert option(submit, "--pipeline-file") == compile_[compile_.index("compile") + 1]
    port = forward[-1].split(":")[0]
    assert option(submit, "--endpoint") == f"http://127.0.0.1:{port}"
    assert forward[-2] == "svc/ml-pipeline" and forward[-1].endswith(":8888")
    assert option(submit, "--run-name").startswith("bert-japanese-kind-")


def test_settings_come_from_the_environment_and_images_from_one_place():
    env = {"KIND_CLUSTER": "lab", "KFP_VERSION": "2.17.2", "BERTJA_IMAGE_REGISTRY": "localhost:5001/bertja",
           "BERTJA_IMAGE_TAG": "dev1"}
    commands = planned("all", env=env)
    assert option(commands[0], "--name") == "lab"
    assert all(option(c, "--context") == "kind-lab" for c in commands if c[0] == "kubectl" and "--context" in c)
    assert all(c.split("?ref=")[1] == "2.17.2" for cmd in commands for c in cmd if "?ref=" in c)
    tags = {option(c, "--tag") for c in commands if c[:2] == ["docker", "build"]}
    assert tags == {f"localhost:5001/bertja/{images.IMAGES[key][0]}:dev1" for key in images.cluster_images()}
    order = [c[0] if c[0] != sys.executable else c[3] for c in commands]
    assert order.index("kind") < order.index("docker") < order.index("helm") < order.index("compile") < order.index("submit")


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")
def test_make_targets_run_the_script():
    for target, command in [("kind-up", "up"), ("kind-images", "images"), ("kind-install", "install"),
                            ("kind-run", "run"), ("images", "build"), ("push", "push")]:
        via_make = planned(target, make=True)
        direct = planned(command)
        strip = lambda cmds: [[a for a in c if not a.startswith("bert-japanese-kind-")] for c in cmds]  # noqa: E731
        assert strip(via_make) == strip(direct) and via_make, target


def test_unknown_command_fails_with_usage():
    result = subprocess.run([str(SCRIPT), "deploy-everything"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "usage: deploy/kind.sh" in result.stderr


@pytest.fixture(scope="module")
def kind_pipeline(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("kind") / "pipeline.yaml"
    subprocess.run([sys.executable, "-m", "pipelines.cli", "compile", str(out), "--profile", "kind"],
                   cwd=ROOT, check=True, capture_output=True, timeout=300)
    return next(yaml.safe_load_all(out.read_text(encoding="utf-8")))


def test_kind_pipeline_runs_only_our_images(kind_pipeline):
    used = {e["container"]["image"] for e in kind_pipeline["deploymentSpec"]["executors"].values()}
    assert used == {images.image(key) for key in images.cluster_images()}


def tasks(spec: dict, dag: dict, path: str = ""):
    for name, task in dag.get("tasks", {}).items():
        component = spec["components"][task["componentRef"]["name"]]
        if "dag" in component:
            yield from tasks(spec, component["dag"], f"{path}{name}/")
        else:
            yield f"{path}{name}", task


def test_a_retrain_on_an_unchanged_dump_hits_the_cache_for_every_data_step(kind_pipeline):
    """Only the steps that look at the outside world ("which dump is latest?", "what is in the JGLUE
    source?") and the exit task that releases compute run every time; everything downstream is keyed on
    their concrete answers and is cached."""
    leaf = dict(tasks(kind_pipeline, kind_pipeline["root"]["dag"]))
    uncached = sorted(name for name, task in leaf.items() if not task.get("cachingOptions", {}).get("enableCache"))
    assert sorted(name.rsplit("/", 1)[-1] for name in uncached) == ["jglue-identity", "release-compute",
                                                                    "resolve-sources"]
    assert len(leaf) > 10

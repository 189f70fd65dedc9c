"""The TPU VM startup script: valid bash, parameters reach the trainer as inert literals,
finished stages are skipped on reboot, failures leave failed.json with the log tail.

The script runs for real under bash with the fake VM's docker/gcloud stubs (tests/fake_tpu_vm.py)
on local directories."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from components.errors import BadInput
from components.tpu import startup
from components.train import status
from fake_tpu_vm import write_stubs

IMAGE = "us-docker.pkg.dev/proj/bertja/bertja-train:0.1.0"
HOSTILE = "x'$(touch PWNED1)`touch PWNED2`; touch PWNED3 && echo \"${HOME}\"\n; touch PWNED4 #"


def _stages(tmp_path, hostile=HOSTILE):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "shard-0.tfrecord.gz").write_bytes(b"records")
    stage1 = str(tmp_path / f"stage1 {hostile}")
    return [
        {"stage": 1, "config": f"tiny{hostile}", "data": f"{data}/*.tfrecord.gz", "model_dir": stage1,
         "overrides": [f"task.train_data.seq_length=64{hostile}"]},
        {"stage": 2, "config": "tiny", "data": f"{data}/shard-0.tfrecord.gz",
         "model_dir": str(tmp_path / "stage2"), "init_checkpoint": stage1, "train_steps": 7},
    ]


def _render(tmp_path, stages, **kw):
    args = dict(node_name=f"node{HOSTILE}", image=IMAGE, stages=stages, accelerator_type="v3-8",
                tokenizer_dir=str(tmp_path / f"tok {HOSTILE}"), train_steps=5)
    return startup.render_startup_script(**{**args, **kw})


def _run_script(tmp_path, script, **env):
    path = tmp_path / "startup.sh"
    path.write_text(script)
    workdir = tmp_path / "vm"
    full_env = {**os.environ, "PATH": f"{write_stubs(str(tmp_path / 'bin'))}:{os.environ['PATH']}",
                "BERTJA_WORKDIR": str(workdir), "FAKE_TPU_JOURNAL": str(tmp_path / "journal.jsonl"),
                "FAKE_TRAIN_STEP_S": "0", "BERTJA_PULL_BACKOFF_S": "0", **env}
    proc = subprocess.run(["bash", str(path)], env=full_env, cwd=tmp_path, timeout=120)
    log = (workdir / "train.log").read_text()
    journal = tmp_path / "journal.jsonl"
    starts = [json.loads(line) for line in journal.read_text().splitlines()] if journal.exists() else []
    return proc.returncode, log, starts


def test_script_is_valid_bash(tmp_path):
    script = _render(tmp_path, _stages(tmp_path))
    assert script.startswith("#!/bin/bash\n")
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_hostile_parameters_reach_the_trainer_as_literal_arguments(tmp_path):
    stages = _stages(tmp_path)
    tokenizer_dir = str(tmp_path / f"tok {HOSTILE}")
    rc, log, starts = _run_script(tmp_path, _render(tmp_path, stages))

    assert rc == 0, log
    assert [s["argv"] for s in starts] == [
        startup.trainer_args(st, tokenizer_dir=tokenizer_dir, train_steps=5)[1:] for st in stages]
    assert starts[0]["argv"][1] == f"tiny{HOSTILE}"  # byte for byte, newline and all
    assert starts[1]["argv"][-1] == "7"  # a stage's own train_steps wins
    assert all(s["image"] == IMAGE and s["env"]["BERTJA_TPU_NODE"] == f"node{HOSTILE}" for s in starts)
    assert not [p for p in tmp_path.rglob("PWNED*")], "a parameter was executed"
    for st in stages:
        assert status.read(st["model_dir"])["complete"] is not None
    assert "all stages complete" in log


def test_a_reboot_skips_finished_stages(tmp_path):
    script = _render(tmp_path, _stages(tmp_path, hostile=""))
    assert _run_script(tmp_path, script)[0] == 0
    rc, log, starts = _run_script(tmp_path, script)
    assert rc == 0 and len(starts) == 2  # nothing new started
    assert log.count("already complete") == 2


def test_trainer_failure_writes_failed_json_with_the_log_tail(tmp_path):
    stages = _stages(tmp_path, hostile="")
    rc, _log, starts = _run_script(tmp_path, _render(tmp_path, stages), FAKE_TRAIN_FAIL="1:3")
    assert rc == 1 and len(starts) == 1  # stage 2 never started
    failed = status.read(stages[0]["model_dir"])["failed"]
    assert failed["error"] == "trainer exited with status 1"
    assert "ResourceExhaustedError: fake TPU HBM OOM" in failed["log_tail"]
    assert status.read(stages[1]["model_dir"])["failed"] is None


def test_the_trainers_own_failed_json_is_kept(tmp_path):
    stages = _stages(tmp_path, hostile="")
    status.write_failed(stages[0]["model_dir"], "trainer's own error", "trainer's own tail")
    _run_script(tmp_path, _render(tmp_path, stages), FAKE_TRAIN_FAIL="1:3")
    assert status.read(stages[0]["model_dir"])["failed"]["error"] == "trainer's own error"


def test_image_pull_failure_is_reported_with_the_log(tmp_path):
    stages = _stages(tmp_path, hostile="")
    rc, _log, starts = _run_script(tmp_path, _render(tmp_path, stages), FAKE_DOCKER_PULL_FAIL="1")
    assert rc == 1 and starts == []
    failed = status.read(stages[0]["model_dir"])["failed"]
    assert failed["error"] == f"could not pull the trainer image {IMAGE}"
    assert "manifest for" in failed["log_tail"] and "not found" in failed["log_tail"]


@pytest.mark.parametrize("image", [
    "ghcr.io/example/bertja-train", "ghcr.io/example/bertja-train:latest",
    "ghcr.io/example/bertja-train:1.0; rm -rf /", "ghcr.io/example/bertja-train:$(id)", "bertja-train:1.0",
])
def test_unpinned_or_malformed_images_are_refused(image):
    with pytest.raises(BadInput, match="trainer_image"):
        startup.check_image(image)


def test_pinned_images_are_accepted():
    digest = "sha256:" + "a" * 64
    for image in (IMAGE, f"ghcr.io/example/bertja-train@{digest}", "localhost:5000/bertja-train:0.1.0-rc1"):
        assert startup.check_image(image) == image


def _docker_options(docker_argv: list[str]) -> list[str]:
    """The options of a recorded ``docker run`` (everything before the image)."""
    return docker_argv[1:docker_argv.index(IMAGE)]


@pytest.mark.parametrize("accelerator, pjrt", [("v3-8", False), ("v4-8", False), ("v5p-8", True),
                                               ("v5litepod-8", True), ("v6e-4", True)])
def test_the_trainer_runs_as_root_with_the_tpu_settings_of_its_generation(tmp_path, accelerator, pjrt):
    """/dev/accel* and /dev/vfio/* are root's on a TPU VM: the image's uid 10001 could not open them.
    TensorFlow reaches v5p/v5e/v6e only through libtpu's PJRT plugin; v2-v4 must not get its settings."""
    stages = _stages(tmp_path, hostile="")
    rc, log, starts = _run_script(tmp_path, _render(tmp_path, stages, accelerator_type=accelerator))
    assert rc == 0, log
    for start in starts:
        options = _docker_options(start["docker_argv"])
        assert options[options.index("--user") + 1] == "0:0"
        plugin = {k: v for k, v in start["env"].items() if "PLUGGABLE" in k}
        assert plugin == ({"NEXT_PLUGGABLE_DEVICE_USE_C_API": "true",
                           "TF_PLUGGABLE_DEVICE_LIBRARY_PATH": startup.LIBTPU_LIBRARY} if pjrt else {})


def test_the_libtpu_path_is_where_the_train_tpu_image_installs_libtpu():
    """The image's virtual environment and Python version, as its Dockerfile builds them, and the
    libtpu wheel's layout (``libtpu/libtpu.so``, what ``libtpu.get_library_path()`` returns)."""
    import re
    from pathlib import Path

    dockerfile = (Path(__file__).resolve().parent.parent / "images" / "train-tpu.Dockerfile").read_text()
    venv = re.search(r"python -m venv (?:--\S+ )*(/\S+)", dockerfile).group(1)
    # The final stage's base (directly, or through the BASE_IMAGE argument's default).
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", dockerfile, re.M) or re.findall(r"^FROM (\S+)", dockerfile, re.M)[-1]
    python = re.search(r"python:(\d+\.\d+)\.", base if isinstance(base, str) else base.group(1)).group(1)
    assert re.search(r'"libtpu==[0-9.]+"', dockerfile), "the image no longer installs libtpu from PyPI"
    assert startup.LIBTPU_LIBRARY == f"{venv}/lib/python{python}/site-packages/libtpu/libtpu.so"

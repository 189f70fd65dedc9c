"""train_on_tpu / release_tpu end to end: the real google-cloud-tpu REST client against the fake
TPU server, whose VMs run the real startup script (docker/gcloud stubs, simulated trainer) against
the GCS emulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from components import storage
from components.errors import BadInput
from components.tpu import orchestrate
from components.tpu.control import TpuError
from components.train import status
from fake_tpu_server import FakeTpuServer

PROJECT, ZONE = "test-project", "us-central1-a"
IMAGE = "ghcr.io/example/bertja-train:1.2.3"
STEPS = 30  # ckpt every 10 steps


@pytest.fixture
def tpu(gcs, tmp_path):
    server = FakeTpuServer(vm_env={"FAKE_TPU_JOURNAL": str(tmp_path / "journal.jsonl"),
                                   "FAKE_TPU_STATE": str(tmp_path), "FAKE_TRAIN_STEP_S": "0.02",
                                   "FAKE_TRAIN_CKPT_EVERY": "10"}).start()
    yield server
    server.stop()


@pytest.fixture
def job(gcs):
    """Stage dicts over fresh data in the emulator (the emulator is shared by the session)."""
    root = f"{gcs}/{uuid.uuid4().hex[:8]}"
    for name in ("cc100/shard-00000.tfrecord.gz", "cc100/shard-00001.tfrecord.gz", "wiki/shard-00000.tfrecord.gz"):
        storage.write_bytes(f"{root}/data/{name}", b"records")
    storage.write_text(f"{root}/tokenizer/vocab.txt", "[PAD]\n")
    stage1, stage2 = f"{root}/model/stage1", f"{root}/model/stage2"
    return {
        "root": root, "tokenizer_dir": f"{root}/tokenizer",
        "stages": [
            {"stage": 1, "config": "tiny", "data": f"{root}/data/cc100/*.tfrecord.gz", "model_dir": stage1},
            {"stage": 2, "config": "tiny", "data": f"{root}/data/wiki/shard-00000.tfrecord.gz",
             "model_dir": stage2, "init_checkpoint": stage1},
        ],
    }


def _train(tpu, job, node="bertja-test", **kw):
    args = dict(project=PROJECT, zone=ZONE, node_name=node, stages=job["stages"],
                tokenizer_dir=job["tokenizer_dir"], trainer_image=IMAGE, train_steps=STEPS, poll_s=0.1,
                heartbeat_timeout_s=30, startup_timeout_s=60, price_per_hour=4.0, api_endpoint=tpu.endpoint)
    return orchestrate.train_on_tpu(**{**args, **kw})


def _journal(tmp_path) -> list[dict]:
    path = tmp_path / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _node_path(name):
    return f"projects/{PROJECT}/locations/{ZONE}/nodes/{name}"


def test_happy_path_trains_both_stages_on_one_vm_and_deletes_it(tpu, job, tmp_path):
    result = _train(tpu, job, labels="team=nlp")

    assert [s["stage"] for s in result["stages"]] == [1, 2]
    assert all(s["step"] == STEPS and s["resumed_from"] == 0 for s in result["stages"])
    assert result["final_metrics"]["stage"] == 2
    assert result["model_dir"] == job["stages"][1]["model_dir"]
    assert result["recreations"] == 0 and result["vm_count"] == 1
    assert result["tpu_hours"] > 0
    assert result["estimated_cost"] == pytest.approx(result["tpu_hours"] * 4.0, abs=1e-3)
    # The VM is gone and its processes with it.
    assert tpu.node_state(_node_path("bertja-test")) is None
    assert all(vm.proc.poll() is not None for vm in tpu.all_vms)
    # What was created: the node shape and a startup script.
    (created,) = tpu.created
    assert created["acceleratorType"] == "v3-8" and created["runtimeVersion"] == "tpu-ubuntu2204-base"
    assert created["labels"] == {"team": "nlp", "managed-by": "bertja"}
    assert "startup-script" in created["metadata"]
    # The trainer ran from the pinned image, with the trainer's CLI contract, stage 1 then stage 2.
    starts = _journal(tmp_path)
    assert [(s["stage"], s["start_step"]) for s in starts] == [(1, 0), (2, 0)]
    assert all(s["image"] == IMAGE and s["env"]["BERTJA_TPU_NODE"] == "bertja-test" for s in starts)
    assert starts[1]["argv"] == ["--config", "tiny", "--stage", "2", "--data", job["stages"][1]["data"],
                                 "--model-dir", job["stages"][1]["model_dir"], "--tokenizer-dir",
                                 job["tokenizer_dir"], "--init-checkpoint", job["stages"][0]["model_dir"],
                                 "--strategy", "tpu", "--tpu", "local", "--train-steps", str(STEPS)]
    for st in job["stages"]:
        assert storage.exists(f"{st['model_dir']}/ckpt-{STEPS}.index")
    # The loss curve comes from the heartbeats the controller followed.
    history = result["stages"][0]["history"]
    assert history and history[-1][0] == STEPS and all(a[0] < b[0] for a, b in zip(history, history[1:]))


def test_the_pipelines_stage_plan_trains_on_tpu(tpu, job, tmp_path):
    from components.train.stages import stage_plan, train_stages

    data = f"{job['root']}/data"
    plan = stage_plan(config="tiny", model_root=f"{job['root']}/plan",
                      stage1_data=[f"{data}/cc100/shard-00000.tfrecord.gz", f"{data}/cc100/shard-00001.tfrecord.gz"],
                      stage2_data=[f"{data}/wiki/shard-00000.tfrecord.gz"], train_steps=(10, 0),
                      shapes=((128, 19), (256, 38)))  # stage 2 data shorter than the recipe's
    settings = {"project": PROJECT, "zone": ZONE, "node_name": "bertja-plan", "accelerator_type": "v3-8",
                "runtime_version": "", "spot": False, "price_per_hour": 1.0, "labels": {"bertja-variant": "wordpiece"},
                "trainer_image": IMAGE, "train_steps": 20, "poll_s": 0.1, "api_endpoint": tpu.endpoint}
    result = train_stages(plan, tokenizer_dir=job["tokenizer_dir"], backend="tpu", tpu=settings)
    assert result["model_dir"] == plan[1]["model_dir"]
    assert [(s["stage"], s["step"]) for s in result["stages"]] == [(1, 10), (2, 20)]
    first, second = _journal(tmp_path)
    assert first["argv"][5] == plan[0]["data"]  # the comma-joined shard list, intact
    assert "--override" not in first["argv"]
    assert [second["argv"][i + 1] for i, a in enumerate(second["argv"]) if a == "--override"] == plan[1]["overrides"]
    assert tpu.node_state(_node_path("bertja-plan")) is None


@pytest.mark.parametrize("queued", [False, True], ids=["node", "queued-resource"])
def test_preemption_mid_stage_recreates_the_vm_and_resumes_from_the_checkpoint(tpu, job, tmp_path, monkeypatch,
                                                                               queued):
    monkeypatch.setitem(tpu.vm_env, "FAKE_TRAIN_PREEMPT", "2:15")  # after ckpt-10 of stage 2
    result = _train(tpu, job, spot=True, queued=queued)

    assert result["recreations"] == 1 and result["vm_count"] == 2
    assert result["interruptions"] == [{"stage": 2, "reason": "node PREEMPTED", "resume_from_step": 10}]
    starts = _journal(tmp_path)
    assert [(s["stage"], s["start_step"]) for s in starts] == [(1, 0), (2, 0), (2, 10)]
    assert starts[1]["node"] == starts[2]["node"] == _node_path("bertja-test")
    assert result["stages"][1]["resumed_from"] == 10 and result["stages"][1]["step"] == STEPS
    # The second VM was only asked for the stage that was left.
    first, second = (c["metadata"]["startup-script"] for c in tpu.created)
    stage1_dir = job["stages"][0]["model_dir"]
    assert f"run_stage {stage1_dir} train" in first and f"run_stage {stage1_dir} train" not in second
    if queued:  # spot is the queued resource's; the node spec carries no scheduling of its own
        assert tpu.queued == {}
    else:
        assert all(c["schedulingConfig"] == {"spot": True} for c in tpu.created)
    assert tpu.node_state(_node_path("bertja-test")) is None


def test_preemption_before_ready_is_retried(tpu, job, tmp_path):
    tpu.preempt_boots = 1
    result = _train(tpu, job, spot=True, train_steps=10)
    assert result["recreations"] == 1 and "PREEMPTED" in result["interruptions"][0]["reason"]
    assert result["interruptions"][0]["resume_from_step"] is None
    assert [(s["stage"], s["start_step"]) for s in _journal(tmp_path)] == [(1, 0), (2, 0)]
    assert len(tpu.created) == 2 and tpu.node_state(_node_path("bertja-test")) is None


def test_stale_heartbeat_counts_as_a_lost_vm(tpu, job, tmp_path, monkeypatch):
    monkeypatch.setitem(tpu.vm_env, "FAKE_TRAIN_HANG", "1:12")  # hangs once, after ckpt-10
    result = _train(tpu, job, heartbeat_timeout_s=1.5)

    assert result["recreations"] == 1
    assert result["interruptions"][0]["stage"] == 1
    assert "heartbeat" in result["interruptions"][0]["reason"]
    assert [(s["stage"], s["start_step"]) for s in _journal(tmp_path)] == [(1, 0), (1, 10), (2, 0)]
    assert tpu.node_state(_node_path("bertja-test")) is None


def test_trainer_failure_deletes_the_vm_and_fails_with_the_log_tail(tpu, job, monkeypatch):
    monkeypatch.setitem(tpu.vm_env, "FAKE_TRAIN_FAIL", "2:5")
    with pytest.raises(orchestrate.TrainingFailed) as err:
        _train(tpu, job)

    message = str(err.value)
    assert "stage 2" in message and "trainer exited with status 1" in message
    assert "ResourceExhaustedError: fake TPU HBM OOM" in message  # from the VM's log
    assert tpu.node_state(_node_path("bertja-test")) is None
    assert status.read(job["stages"][0]["model_dir"])["complete"] is not None
    assert len(tpu.created) == 1  # a failing trainer is not retried on a new VM


def test_retry_budget_exhausted_fails_and_deletes(tpu, job, monkeypatch):
    monkeypatch.setitem(tpu.vm_env, "FAKE_TRAIN_PREEMPT", "1:5")
    with pytest.raises(TpuError, match="lost 1 times"):
        _train(tpu, job, max_recreations=0)
    assert tpu.node_state(_node_path("bertja-test")) is None


def test_queued_resource_run_deletes_resource_and_node(tpu, job):
    result = _train(tpu, job, queued=True, train_steps=10, queue_timeout_s=5400)
    (request,) = tpu.queued_created
    assert request["queueingPolicy"] == {"validUntilDuration": "5400s"}  # its own wait, sent to the API too
    assert result["queued_resource"].endswith("/queuedResources/bertja-test")
    assert [s["step"] for s in result["stages"]] == [10, 10]
    assert tpu.queued == {} and tpu.node_state(_node_path("bertja-test")) is None


def test_cli_train_passes_the_node_shape_on(tpu, job):
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "tpu", "train", "--project", PROJECT, "--zone", ZONE,
         "--name", "bertja-cli", "--api-endpoint", tpu.endpoint, "--network", "vpc", "--no-external-ips",
         "--stages", json.dumps(job["stages"]), "--tokenizer-dir", job["tokenizer_dir"], "--trainer-image", IMAGE,
         "--train-steps", "10", "--poll", "0.1", "--heartbeat-timeout", "30", "--startup-timeout", "60"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [s["step"] for s in json.loads(proc.stdout)["stages"]] == [10, 10]
    (created,) = tpu.created
    assert created["networkConfig"] == {"network": "vpc"}  # enableExternalIps false: proto3 leaves it out


def test_completed_stages_are_not_trained_again(tpu, job, tmp_path):
    _train(tpu, job, train_steps=10)
    again = _train(tpu, job, train_steps=10)
    assert again["vm_count"] == 0 and again["tpu_hours"] == 0
    assert [s["step"] for s in again["stages"]] == [10, 10]
    assert len(_journal(tmp_path)) == 2 and len(tpu.created) == 1


def _spawn_train(tpu, job, node, steps=100_000):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "pipelines.cli", "tpu", "train", "--project", PROJECT, "--zone", ZONE,
            "--name", node, "--api-endpoint", tpu.endpoint, "--stages", json.dumps(job["stages"]),
            "--tokenizer-dir", job["tokenizer_dir"], "--trainer-image", IMAGE, "--train-steps", str(steps),
            "--poll", "0.1"]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_training(tmp_path, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while not _journal(tmp_path):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the trainer never started"
        time.sleep(0.1)


def test_killed_controller_leaves_the_vm_and_the_exit_task_deletes_it(tpu, job, tmp_path):
    proc = _spawn_train(tpu, job, "bertja-killed")
    _wait_for_training(tmp_path, proc)
    proc.kill()
    proc.communicate()
    node = _node_path("bertja-killed")
    assert tpu.node_state(node) == "READY" and tpu.vm_alive(node)  # nobody cleaned up

    released = orchestrate.release_tpu(project=PROJECT, zone=ZONE, node_name="bertja-killed",
                                       api_endpoint=tpu.endpoint)
    assert released["node_deleted"] is True
    assert tpu.node_state(node) is None and not tpu.vm_alive(node)
    # Idempotent: the exit task may run again.
    again = orchestrate.release_tpu(project=PROJECT, zone=ZONE, node_name="bertja-killed",
                                    api_endpoint=tpu.endpoint)
    assert again["deleted"] is False


def test_a_retried_task_follows_its_running_vm_instead_of_restarting(tpu, job, tmp_path):
    proc = _spawn_train(tpu, job, "bertja-retried", steps=STEPS)
    _wait_for_training(tmp_path, proc)
    proc.kill()
    proc.communicate()

    result = _train(tpu, job, node="bertja-retried")  # same inputs: same startup script
    assert [s["step"] for s in result["stages"]] == [STEPS, STEPS]
    assert len(tpu.created) == 1  # followed, not recreated
    assert [(s["stage"], s["start_step"]) for s in _journal(tmp_path)] == [(1, 0), (2, 0)]
    assert tpu.node_state(_node_path("bertja-retried")) is None


def test_a_leftover_node_with_other_settings_is_replaced(tpu, job, tmp_path):
    orchestrate.TpuControl(PROJECT, ZONE, api_endpoint=tpu.endpoint, poll_s=0.1).create_node(
        "bertja-test", orchestrate.NodeSpec(accelerator_type="v2-8"))
    result = _train(tpu, job, train_steps=10)
    assert [c["acceleratorType"] for c in tpu.created] == ["v2-8", "v3-8"]
    assert [s["step"] for s in result["stages"]] == [10, 10]
    assert tpu.node_state(_node_path("bertja-test")) is None


def test_sigterm_deletes_the_vm_before_exiting(tpu, job, tmp_path):
    proc = _spawn_train(tpu, job, "bertja-cancelled")
    _wait_for_training(tmp_path, proc)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "SIGTERM" in err
    assert tpu.node_state(_node_path("bertja-cancelled")) is None


def test_release_failure_is_loud(tpu):
    orchestrate.TpuControl(PROJECT, ZONE, api_endpoint=tpu.endpoint, poll_s=0.1).create_node(
        "bertja-stuck", orchestrate.NodeSpec())
    tpu.fail_next(403, 2)
    with pytest.raises(TpuError, match="FAILED to delete.*PermissionDenied|FAILED to delete.*403"):
        orchestrate.release_tpu(project=PROJECT, zone=ZONE, node_name="bertja-stuck", api_endpoint=tpu.endpoint)
    assert tpu.node_state(_node_path("bertja-stuck")) == "READY"
    assert orchestrate.release_tpu(project=PROJECT, zone=ZONE, node_name="bertja-stuck",
                                   api_endpoint=tpu.endpoint)["node_deleted"] is True


@pytest.mark.parametrize("change, message", [
    ({"zone": "us-central1"}, "--zone"),
    ({"accelerator_type": "v3_8"}, "--accelerator-type"),
    ({"accelerator_type": "v3-32"}, "multi-host"),
    ({"runtime_version": "tpu-vm-tf-2.16.1-pjrt"}, "TensorFlow 2.16.1"),
    ({"runtime_version": "v2-alpha-tpuv5-lite"}, "does not match the trainer"),
    ({"trainer_image": "ghcr.io/example/bertja-train:latest"}, "pinned"),
    ({"tokenizer_dir": "/tmp/tokenizer"}, "tokenizer_dir"),
    ({"node_name": "Bad_Name"}, "--name"),
    ({"spot": True, "preemptible": True}, "choose one"),
    ({"labels": "Team=NLP"}, "--labels"),
])
def test_bad_input_fails_before_anything_is_created(tpu, job, change, message):
    with pytest.raises(BadInput, match=message):
        _train(tpu, job, **change)
    assert tpu.requests == []


@pytest.mark.parametrize("stage_change, message", [
    ({"model_dir": "/local/model"}, "gs://"),
    ({"model_dir": "file:///tmp/model"}, "gs://"),
    ({"data": "DATA/nothing-*.tfrecord.gz"}, "matches no objects"),
    ({"config": "huge"}, "no such training config"),
    ({"stage": 3}, "stage"),
    ({"learning_rate": 1}, "unknown keys"),
    ({"overrides": "task.x=1"}, "KEY=VALUE"),
])
def test_bad_stage_fails_before_anything_is_created(tpu, job, stage_change, message):
    change = {k: v.replace("DATA", f"{job['root']}/data") if isinstance(v, str) else v
              for k, v in stage_change.items()}
    job["stages"][1].update(change)
    with pytest.raises(BadInput, match=message):
        _train(tpu, job)
    assert tpu.requests == []


def test_the_queue_timeout_is_a_pipeline_parameter_that_reaches_the_train_task(tmp_path):
    import yaml

    from pipelines import commands, parameters

    out = tmp_path / "gcp.yaml"
    commands.compile_pipeline(str(out), "gcp", {"tpu_queue_timeout_hours": 36.0},
                              pipeline_root="gs://bertja-test/root")
    spec = next(yaml.safe_load_all(out.read_text()))
    assert spec["root"]["inputDefinitions"]["parameters"]["tpu_queue_timeout_hours"]["defaultValue"] == 36.0
    train_tasks = [task for component in spec["components"].values() if "dag" in component
                   for task in component["dag"]["tasks"].values()
                   if task["componentRef"]["name"] == "comp-train-model"]
    assert train_tasks and all(task["inputs"]["parameters"]["tpu_queue_timeout_hours"]
                               == {"componentInputParameter": "tpu_queue_timeout_hours"} for task in train_tasks)
    with pytest.raises(BadInput, match="tpu_queue_timeout_hours"):
        parameters.validate({"tpu_queue_timeout_hours": 0})

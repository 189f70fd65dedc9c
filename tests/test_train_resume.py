"""The pipeline's train step survives its controller: content-named training dirs, a lease, and a
re-submitted run that resumes from the checkpoint. Real google-cloud-tpu client against the fake
TPU server (whose VMs run the real startup script and a simulated trainer), GCS emulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from components import run_identity, storage
from components.tpu import orchestrate
from components.train import stages, trainer
from test_tpu_orchestrate import IMAGE, PROJECT, ZONE, _journal, _node_path, tpu  # noqa: F401 (tpu: fixture)

VARIANT = "wordpiece"
SHAPES = ((128, 19), (256, 38))
DATA_NAME = "pretraining_data.tfrecord.gz"  # what the pretraining-data manifest lists


def _inputs(root: str, *, cc100=(b"cc100-a", b"cc100-b"), wiki=b"wiki-a", vocab="[PAD]\n[UNK]\n") -> dict:
    """Task inputs as the train component hands them on: shards from manifests, a tokenizer dir."""
    def shards(prefix, contents):
        out = []
        for i, content in enumerate(contents):
            uri = f"{root}/{prefix}-{i}_data/{DATA_NAME}"  # each shard is its own task's output
            storage.write_bytes(uri, content)
            out.append({"shard": f"{prefix}-{i:05d}.txt", "files": {DATA_NAME: uri}})
        return out

    storage.write_text(f"{root}/tokenizer_data/vocab.txt", vocab)
    storage.write_text(f"{root}/tokenizer_data/tokenizer_config.json", "{}\n")
    return {"stage1_shards": shards("cc100", cc100), "stage2_shards": shards("wiki", [wiki]),
            "tokenizer_dir": f"{root}/tokenizer_data"}


def _dir(training_root: str, inputs: dict, **change) -> str:
    args = dict(variant=VARIANT, model_size="tiny", shapes=SHAPES, train_steps=(100, 20), **inputs)
    args.update(change)
    return stages.training_dir(training_root, stages.training_identity(**args))


def test_identical_inputs_get_the_same_training_dir_and_any_change_another(gcs):
    base = f"{gcs}/{uuid.uuid4().hex[:8]}"
    root = f"{base}/training"
    first = _inputs(f"{base}/run-1")
    second = _inputs(f"{base}/run-2")  # the same bytes, written again by other task executions
    assert first["stage1_shards"][0]["files"] != second["stage1_shards"][0]["files"]
    same = _dir(root, first)
    assert same.startswith(f"{root}/tiny-wordpiece-") and _dir(root, second) == same
    # The order of Collected outputs means nothing.
    assert _dir(root, {**first, "stage1_shards": first["stage1_shards"][::-1]}) == same

    others = {
        "a data shard's bytes": _dir(root, _inputs(f"{base}/run-3", cc100=(b"cc100-a", b"cc100-B"))),
        "the tokenizer": _dir(root, _inputs(f"{base}/run-4", vocab="[PAD]\n[UNK]\n[CLS]\n")),
        "stage 1 steps": _dir(root, first, train_steps=(200, 20)),
        "stage 2 shape": _dir(root, first, shapes=((128, 19), (512, 76))),
        "the variant": _dir(root, first, variant="character"),
        "the model size": _dir(root, first, model_size="base"),
    }
    assert same not in others.values()
    assert len(set(others.values())) == len(others), others


def test_a_lease_of_another_live_owner_refuses_and_an_expired_one_does_not(tmp_path):
    directory = str(tmp_path / "training")
    with stages.DirLease(directory, "run-a", ttl_s=60):
        lease = json.loads((tmp_path / "training" / stages.LEASE_FILE).read_text())
        assert lease["owner"] == "run-a"
        with pytest.raises(stages.TrainingDirBusy, match="run 'run-a'.*same inputs"):
            stages.DirLease(directory, "run-b", ttl_s=60).__enter__()
        with stages.DirLease(directory, "run-a", ttl_s=60):  # a retry of the same run goes on
            pass
    assert not (tmp_path / "training" / stages.LEASE_FILE).exists()  # released at the end
    with stages.DirLease(directory, "run-a", ttl_s=60):
        time.sleep(0.3)
        with stages.DirLease(directory, "run-b", ttl_s=0.2):  # not renewed for longer than run-b waits
            assert json.loads((tmp_path / "training" / stages.LEASE_FILE).read_text())["owner"] == "run-b"


def _tpu_settings(server) -> dict:
    return {"project": PROJECT, "zone": ZONE, "trainer_image": IMAGE, "accelerator_type": "v3-8",
            "runtime_version": None, "spot": False, "queued": False, "network": None, "subnetwork": None,
            "service_account": None, "price_per_hour": 1.0, "poll_s": 0.1, "heartbeat_timeout_s": 30,
            "startup_timeout_s": 60, "api_endpoint": server.endpoint}


def _spawn(args: dict, env: dict) -> subprocess.Popen:
    """The train task's core in its own process (the controller pod)."""
    code = ("import json, sys\nfrom components.train.stages import train_variant\n"
            "print(json.dumps(train_variant(**json.loads(sys.argv[1])), default=str))\n")
    return subprocess.Popen([sys.executable, "-c", code, json.dumps(args)], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_killed_controller_and_a_resubmitted_run_resume_from_the_checkpoint(tpu, gcs, tmp_path, monkeypatch):
    monkeypatch.delenv(run_identity.RUN_ID_ENV, raising=False)
    base = f"{gcs}/{uuid.uuid4().hex[:8]}"
    training_root = f"{base}/{stages.TRAINING_ROOT_NAME}"
    args = dict(variant=VARIANT, model_size="tiny", backend="tpu", training_root=training_root,
                fallback_root=f"{base}/run-a/train-model/model_data", shapes=SHAPES, train_steps=(150, 20),
                tpu=_tpu_settings(tpu), **_inputs(f"{base}/run-a"))
    directory = _dir(training_root, {k: args[k] for k in ("stage1_shards", "stage2_shards", "tokenizer_dir")},
                     train_steps=(150, 20))
    stage1_dir = f"{directory}/stage1_cc100"

    # Run A's controller (on KFP: BERTJA_RUN_ID from the pod's pipeline/runid label) is killed mid-stage.
    run_a = "6f1c0f8e-1a2b-4c3d-9e8f-0123456789ab"
    proc = _spawn(args, {run_identity.RUN_ID_ENV: run_a})
    deadline = time.monotonic() + 90
    while (trainer.checkpoint_step(trainer.latest_checkpoint(stage1_dir)) or 0) < 20:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    _out, err = proc.communicate(timeout=30)
    assert f"training dir {directory}" in err
    node_a = orchestrate.tpu_node_name(run_a, VARIANT)
    (created_a,) = tpu.created
    assert created_a["labels"]["bertja-run"] == run_a and created_a["labels"]["bertja-variant"] == VARIANT
    assert created_a["labels"]["bertja-backend"] == "kfp"
    assert tpu.node_state(_node_path(node_a)) == "READY"  # nobody cleaned up yet

    # Run A's exit task: its {{$.pipeline_job_uuid}} input names the same VM the train task created.
    (released,) = orchestrate.release_run(project=PROJECT, zone=ZONE, run_id=run_a, variants=[VARIANT],
                                          api_endpoint=tpu.endpoint)
    assert released["node_deleted"] is True and tpu.node_state(_node_path(node_a)) is None
    killed_at = trainer.checkpoint_step(trainer.latest_checkpoint(stage1_dir))  # the VM trained on till then
    assert 20 <= killed_at < 150

    # Run B (re-submitted: new run id, upstream steps cached or re-run with the same bytes elsewhere).
    run_b = "0a9b8c7d-6e5f-4a3b-8c1d-fedcba987654"
    monkeypatch.setenv(run_identity.RUN_ID_ENV, run_b)
    again = dict(args, fallback_root=f"{base}/run-b/train-model/model_data", **_inputs(f"{base}/run-b"))
    with pytest.raises(stages.TrainingDirBusy, match=run_a):  # A's lease is still fresh
        stages.train_variant(**again)
    time.sleep(1.0)
    result = stages.train_variant(**again, lease_ttl_s=0.5)  # ...and expired after 0.5 s

    assert result["training_dir"] == directory and result["model_dir"] == f"{directory}/stage2_wikipedia"
    starts = [(s["node"].rsplit("/", 1)[-1], s["stage"], s["start_step"]) for s in _journal(tmp_path)]
    node_b = orchestrate.tpu_node_name(run_b, VARIANT)
    assert starts == [(node_a, 1, 0), (node_b, 1, killed_at), (node_b, 2, 0)]  # resumed, not from 0
    assert result["stages"][0]["resumed_from"] == killed_at and result["stages"][0]["step"] == 150
    assert tpu.node_state(_node_path(node_b)) is None
    assert json.loads(storage.read_text(f"{directory}/{stages.INPUTS_FILE}"))["variant"] == VARIANT
    assert not storage.exists(f"{directory}/{stages.LEASE_FILE}")

    # The next scheduled run with the same inputs finds both stages complete: no VM at all.
    monkeypatch.setenv(run_identity.RUN_ID_ENV, "run-c")
    third = stages.train_variant(**dict(args, fallback_root=f"{base}/run-c/out"))
    assert third["training_dir"] == directory and third["vm_count"] == 0 and len(tpu.created) == 2


def test_vertex_run_labels_name_the_vm_for_both_the_train_and_the_exit_task(tpu, gcs, monkeypatch):
    monkeypatch.delenv(run_identity.RUN_ID_ENV, raising=False)
    monkeypatch.setenv(run_identity.VERTEX_LABELS_ENV,
                       json.dumps({run_identity.VERTEX_RUN_LABEL: "8717761889699889152", "team": "nlp"}))
    base = f"{gcs}/{uuid.uuid4().hex[:8]}"
    settings = {**_tpu_settings(tpu), "train_steps": 10}
    result = stages.train_variant(variant=VARIANT, model_size="tiny", backend="tpu", training_root=f"{base}/t",
                                  fallback_root=f"{base}/out", shapes=SHAPES, tpu=settings, **_inputs(base))
    node = orchestrate.tpu_node_name("8717761889699889152", VARIANT)
    assert result["node_name"] == node and result["run_id"] == "8717761889699889152"
    assert tpu.created[0]["labels"]["bertja-run"] == "8717761889699889152"
    assert tpu.created[0]["labels"]["bertja-backend"] == "vertex"  # the TPU janitor leaves it alone
    # Vertex resolves the exit task's {{$.pipeline_job_uuid}} to its own value; the labels still win.
    orchestrate.TpuControl(PROJECT, ZONE, api_endpoint=tpu.endpoint, poll_s=0.1).create_node(
        node, orchestrate.NodeSpec())  # as if the train task's VM were left behind
    (released,) = orchestrate.release_run(project=PROJECT, zone=ZONE, run_id="some-other-uuid", variants=[VARIANT],
                                          api_endpoint=tpu.endpoint)
    assert released["node_deleted"] is True and tpu.node_state(_node_path(node)) is None


def test_run_id_sources_per_backend():
    kfp = {run_identity.RUN_ID_ENV: "6f1c0f8e-1a2b", run_identity.VERTEX_LABELS_ENV: "{}"}
    assert run_identity.find_run_id(kfp) == ("6f1c0f8e-1a2b", "BERTJA_RUN_ID")
    vertex = {run_identity.VERTEX_LABELS_ENV: json.dumps({run_identity.VERTEX_RUN_LABEL: "123"})}
    assert run_identity.find_run_id(vertex)[0] == "123"
    assert run_identity.find_run_id({}) is None  # kfp.local
    assert run_identity.current_run_id("from-input", {}) == "from-input"
    assert run_identity.current_run_id("from-input", kfp) == "6f1c0f8e-1a2b"
    with pytest.raises(Exception, match=run_identity.VERTEX_LABELS_ENV):
        run_identity.find_run_id({run_identity.VERTEX_LABELS_ENV: "not json"})


def test_the_model_artifact_names_an_outside_training_dir_by_its_uri(tmp_path):
    from components import artifacts

    root = "gs://bucket/root/train-model/123/model_data"
    outside = "gs://bucket/root/bertja-training/tiny-wordpiece-0123/stage2_wikipedia"
    assert artifacts.reference(root, f"{root}/stage2_wikipedia") == "stage2_wikipedia"
    assert artifacts.reference(root, outside) == outside
    assert artifacts.resolve("gs://bucket/other/model", "/gcs/bucket/other/model", outside) == outside
    with pytest.raises(ValueError, match="neither"):
        artifacts.reference(str(tmp_path), "/elsewhere/model")

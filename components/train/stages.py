"""The recipe's two training stages (CC-100, then Wikipedia from stage 1's weights),
on this machine's CPU or on a Cloud TPU VM. The pipeline's train step calls this.

Training survives its controller: the training directory is named by the content of the
inputs (data shard identities, tokenizer files, variant, model size, the size profile, stage
shapes and steps) under a root beside the pipeline root, not by the task's output URI, which
is new for every execution. A re-submitted run, a retried task or the next scheduled run with
the same inputs finds the same directory, and the trainer resumes from its latest checkpoint.
A lease object in that directory keeps two runs from training it at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import sys
import threading
import time
import uuid

from components import run_identity, storage
from components.errors import BadInput

TRAINING_DIR_VERSION = 1  # part of the key: bump when what a training dir holds changes meaning
TRAINING_ROOT_NAME = "bertja-training"  # under a gs:// pipeline root
INPUTS_FILE = "inputs.json"  # the identity a training dir was named from, for people
LEASE_FILE = "lease.json"
DEFAULT_LEASE_TTL_S = 600.0  # a lease not renewed for this long belongs to a dead controller


def stage_plan(*, config: str, stage1_data: list[str], stage2_data: list[str], model_root: str,
               train_steps: tuple[int, int] = (0, 0),
               shapes: tuple[tuple[int, int], tuple[int, int]] | None = None,
               single_stage: bool = False) -> list[dict]:
    """The stages as data: what each trains on, where, and from what.

    ``shapes`` gives each stage's (max_seq_length, max_predictions) when the data
    was made with other values than the recipe's stage defaults (the small profiles).
    ``single_stage`` (Tohoku v1/v2: Wikipedia only): stage 2's settings from scratch, no stage 1.
    """
    if single_stage:
        if not stage2_data:
            raise BadInput("training needs pretraining data (Wikipedia) for its one stage")
    elif not stage1_data or not stage2_data:
        raise BadInput("training needs pretraining data for both stages (stage 1 CC-100, stage 2 Wikipedia)")
    stage1_dir = storage.join(model_root, "stage1_cc100")
    stage2_dir = storage.join(model_root, "stage2_wikipedia")
    plan = [
        {"stage": 1, "config": config, "data": ",".join(stage1_data), "model_dir": stage1_dir,
         "init_checkpoint": None, "train_steps": int(train_steps[0]) or None},
        {"stage": 2, "config": config, "data": ",".join(stage2_data), "model_dir": stage2_dir,
         "init_checkpoint": None if single_stage else stage1_dir, "train_steps": int(train_steps[1]) or None},
    ]
    for entry, shape in zip(plan, shapes or ()):
        overrides = shape_overrides(entry["stage"], *shape)
        if overrides:
            entry["overrides"] = overrides
    return plan[1:] if single_stage else plan


def shape_overrides(stage: int, max_seq_length: int, max_predictions: int) -> list[str]:
    """Model Garden overrides for data whose shape differs from the stage's recipe values."""
    from components.train import configs

    st = configs.stage(stage)
    out = []
    if int(max_seq_length) != st.seq_length:
        out += [f"task.train_data.seq_length={int(max_seq_length)}",
                f"task.validation_data.seq_length={int(max_seq_length)}"]
    if int(max_predictions) != st.max_predictions_per_seq:
        out += [f"task.train_data.max_predictions_per_seq={int(max_predictions)}",
                f"task.validation_data.max_predictions_per_seq={int(max_predictions)}"]
    return out


def train_stages(plan: list[dict], *, tokenizer_dir: str, backend: str = "cpu", tpu: dict | None = None) -> dict:
    """Runs the plan; returns ``{"stages": [metrics...], "model_dir": final dir, ...}``."""
    if backend == "cpu":
        from components.train.trainer import train

        results = []
        for s in plan:
            # MLM only (no NSP head) only when asked: the recipe's NSP runs call the trainer as before.
            objective = {} if s.get("next_sentence_prediction", True) else {"next_sentence_prediction": False}
            results.append(train(config=s["config"], stage=s["stage"], data=s["data"], model_dir=s["model_dir"],
                                 tokenizer_dir=tokenizer_dir, init_checkpoint=s["init_checkpoint"],
                                 strategy="one_device", train_steps=s["train_steps"],
                                 overrides=s.get("overrides", ()), **objective))
        return {"backend": "cpu", "stages": results, "model_dir": plan[-1]["model_dir"]}
    if backend == "tpu":
        from components.tpu.orchestrate import train_on_tpu

        if not tpu:
            raise BadInput("training_backend='tpu' needs the TPU settings (gcp_project, gcp_zone, ...)")
        result = train_on_tpu(stages=plan, tokenizer_dir=tokenizer_dir, **tpu)
        return {"backend": "tpu", **result, "model_dir": plan[-1]["model_dir"]}
    raise BadInput(f"training_backend={backend!r}: expected 'cpu' or 'tpu'")


# ---------------------------------------------------------------------------
# Where training lives: named by the content of its inputs
# ---------------------------------------------------------------------------

def training_root(pipeline_root: str | None) -> str:
    """The root of content-named training dirs for a compiled pipeline root ('' = none).

    Only a gs:// root: MinIO (kind) is written only through the KFP launcher, and kfp.local's
    root is chosen per run; there training stays inside the task's output artifact.
    """
    root = (pipeline_root or "").rstrip("/")
    return storage.join(root, TRAINING_ROOT_NAME) if storage.is_gcs(root) else ""


def file_identity(uri: str) -> dict:
    """``{"size", "md5"}`` of a file: GCS object metadata (nothing read), else a streamed md5."""
    st = storage.stat(uri)
    md5 = st.get("md5")
    if not md5:
        digest = hashlib.md5(usedforsecurity=False)
        with storage.open_read(uri, decompress=False) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        md5 = digest.hexdigest()
    return {"size": int(st["size"]), "md5": md5}


def _shard_identities(shards: list[dict], what: str) -> list[dict]:
    """Shards (``{"shard", "files": {name: uri}}``) -> identities, sorted: order carries no meaning."""
    out = []
    for i, sh in enumerate(shards):
        files = sh.get("files") or {}
        if not files:
            raise BadInput(f"{what}[{i}] (shard {sh.get('shard')!r}): lists no files")
        out.append({"shard": str(sh.get("shard") or ""),
                    "files": [{"name": name, **file_identity(uri)} for name, uri in sorted(files.items())]})
    return sorted(out, key=lambda e: (e["shard"], json.dumps(e["files"], sort_keys=True)))


def training_identity(*, variant: str, model_size: str, stage1_shards: list[dict], stage2_shards: list[dict],
                      tokenizer_dir: str, shapes: tuple[tuple[int, int], tuple[int, int]],
                      train_steps: tuple[int, int], single_stage: bool = False,
                      next_sentence_prediction: bool = True) -> dict:
    """Everything a training run's result depends on, as data (no URIs: they change per execution).

    The recipe's two NSP stages keep the identity they always had; other recipes add what differs."""
    from components.train import configs

    prefix = tokenizer_dir.rstrip("/") + "/"
    tokenizer = [{"name": uri[len(prefix):], **file_identity(uri)} for uri in sorted(storage.list_files(tokenizer_dir))]
    if not tokenizer:
        raise BadInput(f"tokenizer {tokenizer_dir}: holds no files")
    stages = []
    for number, shards, (seq, preds), steps in zip((1, 2), (stage1_shards, stage2_shards), shapes, train_steps):
        if single_stage and number == 1:
            continue
        stages.append({"stage": number, "max_seq_length": int(seq), "max_predictions": int(preds),
                       "train_steps": int(steps or 0), "data": _shard_identities(shards, f"stage{number}_examples")})
    return {"version": TRAINING_DIR_VERSION, "variant": variant, "model_size": model_size,
            "profile": dataclasses.asdict(configs.profile(model_size)), "tokenizer": tokenizer, "stages": stages,
            **({} if next_sentence_prediction else {"next_sentence_prediction": False})}


def training_key(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]


def training_dir(root: str, identity: dict) -> str:
    """``{root}/{model_size}-{variant}-{key}``: readable, and equal exactly when the inputs are."""
    return storage.join(root, f"{identity['model_size']}-{identity['variant']}-{training_key(identity)}")


class TrainingDirBusy(RuntimeError):
    """Another run trains the same directory now (same inputs); training it twice corrupts it."""


class DirLease:
    """Who trains a training dir now: ``{dir}/lease.json``, renewed while training, removed after.

    A run that finds a lease of another owner renewed less than ``ttl_s`` ago stops with
    ``TrainingDirBusy``; a lease left by a killed controller expires after ``ttl_s``. Best effort
    (read, then write: two starts within the same moment can both proceed).
    """

    def __init__(self, directory: str, owner: str, *, ttl_s: float = DEFAULT_LEASE_TTL_S):
        self.uri = storage.join(directory, LEASE_FILE)
        self.owner, self.ttl_s = owner, float(ttl_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self) -> None:
        storage.write_text(self.uri, json.dumps({"owner": self.owner, "host": socket.gethostname(),
                                                 "renewed": time.time(), "ttl_s": self.ttl_s}) + "\n")

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                self._write()
            except Exception as e:  # a missed renewal only shortens the lease
                print(f"lease {self.uri}: renewal failed: {e}", file=sys.stderr, flush=True)

    def __enter__(self) -> DirLease:
        held = storage.read_json_object(self.uri) if storage.exists(self.uri) else None
        if held and held.get("owner") != self.owner:
            age = time.time() - float(held.get("renewed") or 0)
            if age < self.ttl_s:
                raise TrainingDirBusy(
                    f"{self.uri}: run {held.get('owner')!r} (host {held.get('host')}) trains this directory "
                    f"(lease renewed {age:.0f}s ago); it has the same inputs, so its result is this run's. "
                    f"Re-run after it finished, or after {self.ttl_s - age:.0f}s if it was killed")
        self._write()
        self._thread = threading.Thread(target=self._renew, name="training-dir-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            if storage.exists(self.uri) and storage.read_json_object(self.uri).get("owner") == self.owner:
                storage.remove(self.uri)
        except Exception as e:  # the lease expires anyway
            print(f"lease {self.uri}: not removed: {e}", file=sys.stderr, flush=True)
        return False


def _with_run(tpu: dict, variant: str, run_id: str, backend: str) -> dict:
    """TPU settings + the node name and labels of this run (the exit task derives the same name)."""
    from components.tpu.control import tpu_node_name

    labels = {**(tpu.get("labels") or {}), "bertja-run": run_id[-63:].lower(), "bertja-variant": variant,
              "bertja-backend": backend}
    return {**tpu, "node_name": tpu_node_name(run_id, variant), "labels": labels}


def train_variant(*, variant: str, model_size: str, stage1_shards: list[dict], stage2_shards: list[dict],
                  tokenizer_dir: str, backend: str, training_root: str, fallback_root: str,
                  shapes: tuple[tuple[int, int], tuple[int, int]], train_steps: tuple[int, int] = (0, 0),
                  tpu: dict | None = None, lease_ttl_s: float = DEFAULT_LEASE_TTL_S, single_stage: bool = False,
                  next_sentence_prediction: bool = True) -> dict:
    """The pipeline's train step: both stages in the content-named dir, resuming what is there.

    ``stage*_shards``: per shard ``{"shard": name, "files": {manifest name: uri}}``. ``training_root``
    '' trains under ``fallback_root`` (the task's own output). ``tpu``: TPU settings without node
    name and labels, which come from the backend's run id (``components.run_identity``).
    ``single_stage``: stage 2 only, from scratch (``stage1_shards`` ignored); ``next_sentence_prediction``
    False: MLM only. Returns ``train_stages``' result plus ``training_dir``, ``training_key``, ``plan``, ``run_id``.
    """
    identity = training_identity(variant=variant, model_size=model_size, stage1_shards=stage1_shards,
                                 stage2_shards=stage2_shards, tokenizer_dir=tokenizer_dir, shapes=shapes,
                                 train_steps=train_steps, single_stage=single_stage,
                                 next_sentence_prediction=next_sentence_prediction)
    root = training_dir(training_root, identity) if training_root else fallback_root
    plan = stage_plan(config=model_size, model_root=root, train_steps=train_steps, shapes=shapes,
                      stage1_data=[u for sh in stage1_shards for _, u in sorted(sh["files"].items())],
                      stage2_data=[u for sh in stage2_shards for _, u in sorted(sh["files"].items())],
                      single_stage=single_stage)
    if not next_sentence_prediction:
        for entry in plan:
            entry["next_sentence_prediction"] = False
    found = run_identity.find_run_id()
    run_id = found[0] if found else None
    if backend == "tpu" and tpu is not None:
        if run_id is None:  # kfp.local: nothing names the run; this name is new per execution
            run_id = f"local-{uuid.uuid4().hex[:12]}"
        print(f"run id {run_id} ({found[1] if found else 'no backend source: a new id'})", file=sys.stderr)
        tpu = _with_run(tpu, variant, run_id, run_identity.backend_of(found))
    storage.write_text(storage.join(root, INPUTS_FILE), json.dumps(identity, indent=2, sort_keys=True) + "\n")
    print(f"training dir {root} (key {training_key(identity)})", file=sys.stderr, flush=True)
    owner = run_id or f"{socket.gethostname()}:{os.getpid()}"
    with DirLease(root, owner, ttl_s=lease_ttl_s):
        result = train_stages(plan, tokenizer_dir=tokenizer_dir, backend=backend, tpu=tpu)
    return {**result, "training_dir": root, "training_key": training_key(identity), "plan": plan,
            "run_id": run_id}

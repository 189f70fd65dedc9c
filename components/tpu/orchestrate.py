"""The TPU stage runner: provision, launch, follow, survive preemption, always delete.

``train_on_tpu`` is what the train task runs on the TPU backend. It checks every input before
anything is created, creates the VM (a node, or a queued resource) whose startup script runs the
remaining stages (``startup.py``), then follows the trainer only through the status objects it
writes to GCS (``components/train/status.py``) and the node's state:

- ``complete.json`` of a stage: log its metrics, follow the next stage (same VM).
- ``failed.json``: delete the VM, raise ``TrainingFailed`` with the trainer's log tail.
- node PREEMPTED / TERMINATED / STOPPED / gone, or a heartbeat that stopped changing: delete the
  VM, create it again (the trainer resumes from the latest checkpoint in its model dir), up to
  ``max_recreations`` times.

The VM is deleted when the function returns or raises, and on SIGTERM (a KFP cancellation). The
exit-handler task ``release_tpu`` deletes it again by name (idempotent) in case this process was
killed outright. TPU-hours are counted from each create request to its confirmed deletion.
"""

from __future__ import annotations

import dataclasses
import functools
import signal
import threading
import time

from components import images, storage
from components.errors import BadInput
from components.tpu import control, startup
from components.tpu.control import NodeSpec, TpuControl, TpuError, log, tpu_node_name  # noqa: F401 (API)
from components.train import status, trainer

DEFAULT_POLL_S = 30.0
DEFAULT_HEARTBEAT_TIMEOUT_S = 1200.0  # no new heartbeat for this long: the VM is lost or hung
DEFAULT_STARTUP_TIMEOUT_S = 2400.0  # first heartbeat of a stage: image pull, TPU init, XLA compile
DEFAULT_READY_TIMEOUT_S = 3600.0  # create until READY (a queued resource's wait in the queue has its own)
DEFAULT_QUEUE_TIMEOUT_S = control.DEFAULT_QUEUE_TIMEOUT_S
# USD per node-hour. Rough on-demand list price of a v3-8; pass the current price of your
# accelerator, region and spot/on-demand choice: the estimate is only as good as this number.
DEFAULT_PRICE_PER_HOUR = 8.0
LOST_STATES = ("PREEMPTED", "TERMINATED", "STOPPED", "STOPPING")
STAGE_KEYS = ("stage", "config", "data", "model_dir", "init_checkpoint", "train_steps", "overrides")


class TrainingFailed(RuntimeError):
    """The trainer on the VM reported failure; the message carries its log tail."""


class Cancelled(SystemExit):
    """SIGTERM (KFP cancellation): the VM was deleted; exit like a terminated process."""

    def __init__(self):
        super().__init__(128 + signal.SIGTERM)


# ---------------------------------------------------------------------------
# Checks (all before anything is created)
# ---------------------------------------------------------------------------

def _check_gcs(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.startswith("gs://"):
        raise BadInput(f"{what} {value!r}: a TPU VM reads and writes GCS only; expected gs://BUCKET/PATH")
    _bucket, key = storage.split_gcs(value)
    if not key.strip("/"):
        raise BadInput(f"{what} {value!r}: name a path inside the bucket, not the bucket itself")
    return value.rstrip("/")


def _check_data(data: str, what: str, *, check_exists: bool) -> str:
    """A gs:// glob, or several joined with commas; each must match something."""
    parts = [p.strip() for p in str(data).split(",") if p.strip()]
    if not parts:
        raise BadInput(f"{what}: empty")
    for part in parts:
        _check_gcs(part, what)
        if check_exists and not storage.glob(part):
            raise BadInput(f"{what} {part!r}: matches no objects")
    return ",".join(parts)


def check_stages(stages: list[dict], *, check_data: bool = True) -> list[dict]:
    """Normalised stage dicts; bad keys, non-gs:// URIs, unknown configs or missing data are BadInput."""
    from components.train import configs

    if not stages:
        raise BadInput("stages: nothing to train (expected a list of {stage, config, data, model_dir, ...})")
    out = []
    for i, raw in enumerate(stages):
        where = f"stages[{i}]"
        if not isinstance(raw, dict):
            raise BadInput(f"{where}: expected a dict, got {type(raw).__name__}")
        unknown = set(raw) - set(STAGE_KEYS)
        missing = {"stage", "config", "data", "model_dir"} - set(raw)
        if unknown or missing:
            raise BadInput(f"{where}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)} "
                           f"(keys: {', '.join(STAGE_KEYS)})")
        try:
            number = int(raw["stage"])
        except (TypeError, ValueError):
            raise BadInput(f"{where}.stage {raw['stage']!r}: not a stage number") from None
        configs.stage(number)
        configs.profile(str(raw["config"]))
        st = {"stage": number, "config": str(raw["config"]),
              "data": _check_data(raw["data"], f"{where}.data", check_exists=check_data),
              "model_dir": _check_gcs(raw["model_dir"], f"{where}.model_dir"),
              "init_checkpoint": (_check_gcs(raw["init_checkpoint"], f"{where}.init_checkpoint")
                                  if raw.get("init_checkpoint") else None),
              "train_steps": int(raw["train_steps"]) if raw.get("train_steps") else None}
        if st["train_steps"] is not None and st["train_steps"] < 1:
            raise BadInput(f"{where}.train_steps {raw['train_steps']!r}: must be >= 1")
        overrides = raw.get("overrides") or []
        if isinstance(overrides, str) or not all(isinstance(o, str) and "=" in o for o in overrides):
            raise BadInput(f"{where}.overrides {overrides!r}: expected a list of KEY=VALUE strings")
        st["overrides"] = list(overrides)
        out.append(st)
    dirs = [s["model_dir"] for s in out]
    if len(set(dirs)) != len(dirs):
        raise BadInput(f"stages: each stage needs its own model_dir (got {dirs})")
    return out


def latest_checkpoint_step(model_dir: str) -> int | None:
    """The step of the checkpoint the trainer will resume from (TF's ``checkpoint`` state file)."""
    checkpoint = trainer.latest_checkpoint(model_dir)
    return trainer.checkpoint_step(checkpoint) if checkpoint else None


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------

class _Lost(Exception):
    """The VM stopped making progress (preempted, gone, silent); recreate it."""


class _StageRun:
    """One train_on_tpu call: the VMs it created, their time, the stages' outcomes."""

    def __init__(self, control: TpuControl, node_name: str, spec: NodeSpec, *, queued: bool,
                 image: str, tokenizer_dir: str, train_steps: int | None, heartbeat_timeout_s: float,
                 startup_timeout_s: float, ready_timeout_s: float, poll_s: float,
                 queue_timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S):
        self.control = control
        self.name = node_name
        self.spec = spec
        self.queued = queued
        self.image = image
        self.tokenizer_dir = tokenizer_dir
        self.train_steps = train_steps
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.startup_timeout_s = startup_timeout_s
        self.ready_timeout_s = ready_timeout_s
        self.queue_timeout_s = queue_timeout_s
        self.poll_s = poll_s
        self.vm_seconds = 0.0
        self.vm_count = 0
        self._vm_started: float | None = None
        self.metrics: dict[int, dict] = {}
        self.history: dict[int, list] = {}  # stage -> [[step, loss], ...] from the heartbeats seen
        self.interruptions: list[dict] = []

    # VM lifetime -------------------------------------------------------------
    def launch(self, stages: list[dict]) -> None:
        from google.api_core.exceptions import Conflict  # 409: HTTP's AlreadyExists

        script = startup.render_startup_script(node_name=self.name, image=self.image, stages=stages,
                                               tokenizer_dir=self.tokenizer_dir, train_steps=self.train_steps,
                                               accelerator_type=self.spec.accelerator_type)
        spec = dataclasses.replace(self.spec, metadata={startup.STARTUP_SCRIPT_KEY: script})
        create = (functools.partial(self.control.create_queued_resource, queue_timeout_s=self.queue_timeout_s)
                  if self.queued else self.control.create_node)
        self._vm_started = time.monotonic()
        self.vm_count += 1
        try:
            create(self.name, spec, timeout_s=self.ready_timeout_s)
        except Conflict:
            # A retried task (or a retried create) finds its own VM: follow it instead of restarting.
            node = self.control.get_node(self.name)
            if (node is not None and control.state_name(node) in ("CREATING", "READY")
                    and node.metadata.get(startup.STARTUP_SCRIPT_KEY) == script):
                log(f"node {self.name} already exists and runs these stages: following it")
                self.control.wait_ready(self.name, deadline=time.monotonic() + self.ready_timeout_s)
                return
            log(f"node {self.name} already exists with other settings or state: replacing it")
            self.control.release(self.name)
            create(self.name, spec, timeout_s=self.ready_timeout_s)

    def release(self, *, timeout_s: float = 900.0) -> dict:
        try:
            return self.control.release(self.name, timeout_s=timeout_s)
        finally:
            if self._vm_started is not None:
                self.vm_seconds += time.monotonic() - self._vm_started
                self._vm_started = None

    # following ---------------------------------------------------------------
    def follow(self, stages: list[dict]) -> None:
        """Returns when every stage is complete; raises TrainingFailed or _Lost."""
        for st in stages:
            self._follow_stage(st)

    def _follow_stage(self, st: dict) -> None:
        model_dir, number = st["model_dir"], st["stage"]
        baseline = status.read(model_dir)["heartbeat"]  # may be left over from a lost VM
        last, fresh, changed_at = baseline, False, time.monotonic()
        while True:
            current = status.read(model_dir)
            hb = current["heartbeat"]
            if hb != last:
                last, fresh, changed_at = hb, True, time.monotonic()
                log(f"stage {number}: {_metrics_line(hb)}")
                self._record(number, hb)
            if current["failed"]:
                failed = current["failed"]
                raise TrainingFailed(f"stage {number} failed on TPU node {self.name}: "
                                     f"{failed.get('error')}\n--- log tail ---\n{failed.get('log_tail', '')}")
            if current["complete"]:
                self.metrics[number] = current["complete"]
                self._record(number, current["complete"])
                log(f"stage {number} complete: {_metrics_line(current['complete'])}")
                return
            node = self.control.get_node(self.name)
            state = control.state_name(node) if node is not None else "GONE"
            if state in LOST_STATES or state == "GONE":
                raise _Lost(f"node {state}")
            silent = time.monotonic() - changed_at
            limit = self.heartbeat_timeout_s if fresh else self.startup_timeout_s
            if silent > limit:
                raise _Lost(f"no {'new ' if fresh else ''}heartbeat for {silent:.0f}s (node {state})")
            time.sleep(self.poll_s)

    def _record(self, number: int, point: dict | None) -> None:
        """Adds (step, loss) to the stage's loss curve when it is a new step."""
        if not point or point.get("step") is None or point.get("loss") is None:
            return
        curve = self.history.setdefault(number, [])
        if not curve or point["step"] > curve[-1][0]:
            curve.append([point["step"], point["loss"]])

    def run(self, stages: list[dict], max_recreations: int) -> None:
        remaining = self._incomplete(stages)
        while remaining:
            for st in remaining:
                status.clear(st["model_dir"])  # markers of an earlier attempt; checkpoints stay
            try:
                self.launch(remaining)
                self.follow(remaining)
                return
            except (_Lost, control.NodeLost) as lost:
                pending = self._incomplete(remaining)
                if not pending:  # it finished just as the VM went away
                    return
                current = pending[0]
                resume = latest_checkpoint_step(current["model_dir"])
                self.interruptions.append({"stage": current["stage"], "reason": str(lost),
                                           "resume_from_step": resume})
                log(f"TPU node {self.name} lost during stage {current['stage']} ({lost})")
                self.release()
                if len(self.interruptions) > max_recreations:
                    raise TpuError(f"TPU node {self.name} was lost {len(self.interruptions)} times; "
                                   f"giving up (max_recreations={max_recreations})") from None
                log(f"recreating node {self.name} ({len(self.interruptions)}/{max_recreations}); stage "
                    f"{current['stage']} resumes from "
                    f"{'checkpoint step ' + str(resume) if resume is not None else 'the start'}")
                remaining = pending

    def _incomplete(self, stages: list[dict]) -> list[dict]:
        out = []
        for st in stages:
            done = status.read(st["model_dir"])["complete"]
            if done and st["stage"] not in self.metrics:
                log(f"stage {st['stage']} already complete in {st['model_dir']}")
                self.metrics[st["stage"]] = done
            if not done:
                out.append(st)
        return out


def _metrics_line(m: dict) -> str:
    parts = []
    if m.get("step") is not None:
        parts.append(f"step {m['step']}" + (f"/{m['train_steps']}" if m.get("train_steps") else ""))
    for key, fmt in (("loss", "loss {:.4f}"), ("steps_per_sec", "{:.2f} steps/s"),
                     ("examples_per_sec", "{:.0f} examples/s")):
        if isinstance(m.get(key), (int, float)):
            parts.append(fmt.format(m[key]))
    return ", ".join(parts) or "(no metrics)"


class _SigtermCancels:
    """SIGTERM raises Cancelled in the main thread, except while the VM is being deleted."""

    def __init__(self):
        self.received = False
        self.releasing = False
        self._previous = None
        self._installed = threading.current_thread() is threading.main_thread()

    def __enter__(self):
        if self._installed:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc):
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
        return False

    def _handle(self, signum, frame):
        self.received = True
        if not self.releasing:
            log("SIGTERM: cancelling; deleting the TPU VM first")
            raise Cancelled()


# ---------------------------------------------------------------------------
# The two entry points the pipeline wraps
# ---------------------------------------------------------------------------

def train_on_tpu(*, project: str, zone: str, node_name: str, stages: list[dict], tokenizer_dir: str,
                 accelerator_type: str = control.DEFAULT_ACCELERATOR, runtime_version: str | None = None,
                 spot: bool = False, preemptible: bool = False, queued: bool = False,
                 network: str | None = None, subnetwork: str | None = None, external_ips: bool = True,
                 service_account: str | None = None, labels: dict | str | None = None,
                 tags: list[str] | str | None = None, trainer_image: str | None = None,
                 train_steps: int | None = None, max_recreations: int = 3,
                 heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S,
                 startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
                 ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S, poll_s: float = DEFAULT_POLL_S,
                 price_per_hour: float = DEFAULT_PRICE_PER_HOUR, api_endpoint: str | None = None,
                 queue_timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S) -> dict:
    """Trains ``stages`` in order on one TPU VM named ``node_name``; always deletes it.

    ``stages``: dicts with ``stage``, ``config``, ``data`` (gs:// globs, comma-separated),
    ``model_dir`` (gs://), optional ``init_checkpoint`` (gs://), ``train_steps`` and ``overrides``
    (Model Garden ``KEY=VALUE`` strings). With ``queued``, the VM waits in the queue for capacity for
    up to ``queue_timeout_s`` (hours, typically), then has ``ready_timeout_s`` to become READY.
    Returns the model dir, final metrics per stage, recreations, TPU-hours and the estimated cost.
    """
    control.check_project(project)
    control.check_zone(zone)
    control.check_node_name(node_name)
    if max_recreations < 0:
        raise BadInput(f"max_recreations {max_recreations!r}: must be >= 0")
    if price_per_hour is None or price_per_hour < 0:
        raise BadInput(f"price_per_hour {price_per_hour!r}: must be >= 0")
    if queued and not (queue_timeout_s and queue_timeout_s > 0):
        raise BadInput(f"queue timeout {queue_timeout_s!r} s: must be positive")
    tokenizer_dir = _check_gcs(tokenizer_dir, "tokenizer_dir")
    image = startup.check_image(trainer_image or images.image("train-tpu"))
    spec = NodeSpec(accelerator_type=accelerator_type, runtime_version=runtime_version, spot=spot,
                    preemptible=preemptible, network=network, subnetwork=subnetwork, external_ips=external_ips,
                    service_account=service_account, labels=control.parse_labels(labels),
                    tags=control.parse_tags(tags)).checked()
    stages = check_stages(stages)
    tpu = TpuControl(project, zone, api_endpoint=api_endpoint, poll_s=poll_s)

    run = _StageRun(tpu, node_name, spec, queued=queued, image=image, tokenizer_dir=tokenizer_dir,
                    train_steps=train_steps, heartbeat_timeout_s=heartbeat_timeout_s,
                    startup_timeout_s=startup_timeout_s, ready_timeout_s=ready_timeout_s, poll_s=poll_s,
                    queue_timeout_s=queue_timeout_s)
    with _SigtermCancels() as sigterm:
        try:
            run.run(stages, max_recreations)
        except Cancelled:
            pass  # the VM is deleted below, then Cancelled is raised again
        finally:
            sigterm.releasing = True
            if sigterm.received:
                # The pod has seconds left: request the deletion and wait briefly; the exit task
                # checks again.
                try:
                    run.release(timeout_s=20.0)
                except TpuError as e:
                    log(str(e))
            else:
                run.release()
    if sigterm.received:
        raise Cancelled()

    hours = run.vm_seconds / 3600.0
    summary = {
        "project": project, "zone": zone, "node_name": node_name, "node": tpu.node_path(node_name),
        "queued_resource": tpu.queued_resource_path(node_name) if queued else None,
        "accelerator_type": spec.accelerator_type, "runtime_version": spec.runtime_version,
        "spot": spot, "preemptible": preemptible, "trainer_image": image,
        "model_dir": stages[-1]["model_dir"],
        "stages": [{**(run.metrics.get(s["stage"]) or {}), "stage": s["stage"], "model_dir": s["model_dir"],
                    "history": run.history.get(s["stage"], [])} for s in stages],
        "final_metrics": run.metrics.get(stages[-1]["stage"]),
        "recreations": len(run.interruptions), "interruptions": run.interruptions,
        "vm_count": run.vm_count, "tpu_hours": round(hours, 6),
        "chip_hours": round(hours * control.chips(spec.accelerator_type), 6),
        "price_per_hour": price_per_hour, "estimated_cost": round(hours * price_per_hour, 4),
    }
    log(f"done: {summary['tpu_hours']:.3f} TPU-hours on {run.vm_count} VM(s), "
        f"{summary['recreations']} recreation(s), estimated cost {summary['estimated_cost']:.2f} "
        f"at {price_per_hour}/hour")
    return summary


def release_tpu(*, project: str, zone: str, node_name: str, api_endpoint: str | None = None,
                timeout_s: float = 900.0) -> dict:
    """The exit-handler task: deletes the node and its queued resource, whatever happened.

    Gone already is success; a failed deletion raises ``TpuError`` (the task fails loudly).
    """
    result = TpuControl(project, zone, api_endpoint=api_endpoint).release(node_name, timeout_s=timeout_s)
    log(f"released {result['node']}: node deleted={result['node_deleted']}, "
        f"queued resource deleted={result['queued_resource_deleted']}")
    return result


def release_run(*, project: str, zone: str, run_id: str, variants: list[str], api_endpoint: str | None = None,
                timeout_s: float = 900.0) -> list[dict]:
    """The exit task: deletes the TPU VM of every variant of a run, named as the train task names them.

    The backend's run id (``components.run_identity``, what the train task uses) wins over
    ``run_id`` (the exit task's ``{{$.pipeline_job_uuid}}`` input; the same value on KFP).
    """
    from components.run_identity import current_run_id

    run = current_run_id(default=run_id)
    if not run:
        raise BadInput("run_id: empty and the backend gives none; cannot name this run's TPU VMs")
    return [release_tpu(project=project, zone=zone, node_name=tpu_node_name(run, v), api_endpoint=api_endpoint,
                        timeout_s=timeout_s) for v in variants]


def release_training(*, backend: str, run_id: str, variants: list[str], gcp_project: str, gcp_zone: str,
                     trainjobs: bool = False) -> list[dict]:
    """The exit task: the run's TPU VMs (``backend`` 'tpu') and, where the profile trains on Kubeflow
    Trainer (``trainjobs``), its TrainJobs in the pod's namespace. Both are tried; the first failure is
    raised after."""
    steps = []
    if backend == "tpu":
        steps.append(lambda: release_run(project=gcp_project, zone=gcp_zone, run_id=run_id, variants=variants))
    else:
        log(f"training_backend={backend!r}: no TPU VM to release")
    if trainjobs:
        from components.torch_train import trainjob

        steps.append(lambda: trainjob.release_run(trainjob.TrainJobControl(None), run_id=run_id, variants=variants))
    released, failures = [], []
    for release in steps:
        try:
            released += release()
        except Exception as e:  # noqa: BLE001 -- the other kind is still released; raised below
            log(f"release failed: {e}")
            failures.append(e)
    if failures:
        raise failures[0]
    return released

"""The trainer's status objects in the model dir: how a controller that cannot
see the trainer's process (a TPU VM) follows it through storage alone.

Layout under ``{model_dir}/status/``:
- ``heartbeat.json``: rewritten every few steps:
  ``{"stage", "step", "train_steps", "loss", "steps_per_sec", "examples_per_sec", "time", "host"}``
- ``complete.json``: written once when training finished: the final metrics.
- ``failed.json``: written when the trainer failed: ``{"error", "log_tail", "time", "host"}``.
``time`` is Unix seconds (float). Writers use storage's atomic writes, so a reader never sees a
half-written object.
"""

from __future__ import annotations

import json
import socket
import time

from components import storage

HEARTBEAT = "heartbeat.json"
COMPLETE = "complete.json"
FAILED = "failed.json"


def status_uri(model_dir: str, name: str) -> str:
    return storage.join(model_dir, "status", name)


def _write(model_dir: str, name: str, payload: dict) -> None:
    payload = {"time": time.time(), "host": socket.gethostname(), **payload}
    storage.write_text(status_uri(model_dir, name), json.dumps(payload, sort_keys=True) + "\n")


def write_heartbeat(model_dir: str, *, stage: int, step: int, train_steps: int, loss: float | None,
                    steps_per_sec: float | None, examples_per_sec: float | None) -> None:
    _write(model_dir, HEARTBEAT, {"stage": stage, "step": step, "train_steps": train_steps, "loss": loss,
                                  "steps_per_sec": steps_per_sec, "examples_per_sec": examples_per_sec})


def write_complete(model_dir: str, metrics: dict) -> None:
    _write(model_dir, COMPLETE, dict(metrics))


def write_failed(model_dir: str, error: str, log_tail: str) -> None:
    _write(model_dir, FAILED, {"error": error, "log_tail": log_tail})


def clear(model_dir: str) -> None:
    """Removes completion/failure markers before a (re)start; checkpoints stay."""
    for name in (COMPLETE, FAILED):
        storage.remove(status_uri(model_dir, name))


def read(model_dir: str) -> dict:
    """``{"heartbeat": dict|None, "complete": dict|None, "failed": dict|None}``."""
    out = {}
    for key, name in (("heartbeat", HEARTBEAT), ("complete", COMPLETE), ("failed", FAILED)):
        uri = status_uri(model_dir, name)
        out[key] = storage.read_json_object(uri) if storage.exists(uri) else None
    return out

"""Which pipeline run a task belongs to, read from what each backend gives the task's
container, never from a task input.

The KFP driver resolves a run-scoped input (``{{$.pipeline_job_uuid}}``) before it computes
the cache key, so a task that takes one is never a cache hit. Only names of what a run
creates outside KFP need the run id (the TPU node, its ``bertja-run`` label), so the tasks
that need it read it here:

- KFP 2.x on Argo: the API server (and the recurring-run controller) put the label
  ``pipeline/runid=<run id>`` on every pod of a run (the workflow's ``spec.podMetadata``);
  ``pipelines.platform`` exposes it as ``BERTJA_RUN_ID`` through kfp-kubernetes'
  ``use_field_path_as_env``. The same id is what ``{{$.pipeline_job_uuid}}`` resolves to.
  Platform config is not in KFP's cache key (inputs, output specs, image, command, args
  and PVC names are).
- Vertex AI Pipelines: no such label; the container of each task gets
  ``VERTEX_AI_PIPELINES_RUN_LABELS`` (JSON), whose ``vertex-ai-pipelines-run-billing-id``
  is unique per pipeline run.
- kfp.local: ignores platform config and sets neither; ``BERTJA_RUN_ID`` may be exported
  by hand, otherwise the caller's fallback applies.
"""

from __future__ import annotations

import json
import os

from components.errors import BadInput

RUN_ID_ENV = "BERTJA_RUN_ID"
KFP_RUN_ID_LABEL = "pipeline/runid"
KFP_RUN_ID_FIELD_PATH = f"metadata.labels['{KFP_RUN_ID_LABEL}']"
VERTEX_LABELS_ENV = "VERTEX_AI_PIPELINES_RUN_LABELS"
VERTEX_RUN_LABEL = "vertex-ai-pipelines-run-billing-id"
# The backend whose run id names a VM (its ``bertja-backend`` label): the TPU janitor asks
# KFP's API only about ``kfp`` VMs, so a Vertex or local run's VM is never taken for a
# vanished KFP run.
BACKEND_OF_SOURCE = {RUN_ID_ENV: "kfp", VERTEX_LABELS_ENV: "vertex"}


def find_run_id(environ=None) -> tuple[str, str] | None:
    """``(run id, where it came from)`` from this process's environment, or None."""
    env = os.environ if environ is None else environ
    value = (env.get(RUN_ID_ENV) or "").strip()
    if value:
        return value, RUN_ID_ENV
    labels = env.get(VERTEX_LABELS_ENV)
    if labels:
        try:
            value = str(json.loads(labels).get(VERTEX_RUN_LABEL) or "").strip()
        except (ValueError, AttributeError) as e:
            raise BadInput(f"{VERTEX_LABELS_ENV}: not a JSON object of labels ({e})") from e
        if value:
            return value, f"{VERTEX_LABELS_ENV}[{VERTEX_RUN_LABEL}]"
    return None


def backend_of(found: tuple[str, str] | None) -> str:
    """``kfp``, ``vertex`` or ``local`` for what ``find_run_id`` returned."""
    if found is None:
        return "local"
    return BACKEND_OF_SOURCE[found[1].split("[", 1)[0]]


def current_run_id(default: str | None = None, environ=None) -> str | None:
    """The run id from the backend; ``default`` where the backend gives none (kfp.local)."""
    found = find_run_id(environ)
    return found[0] if found else default

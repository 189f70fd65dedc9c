"""KFP component: the exit task that releases training compute, whatever happened."""

from typing import List

from kfp import dsl

from components.images import image


@dsl.component(base_image=image("tpu"), install_kfp_package=False)
def release_compute(backend: str, run_id: str, variants: List[str], gcp_project: str, gcp_zone: str):
    """Deletes every TPU VM this run may have created (idempotent; a failure is loud).

    Node names are derived from the run id, not read from the train task: an exit task may
    not depend on tasks inside its exit handler, and it must work even when the train task
    never reported anything. Never cached, so it may take the run-id placeholder as an input;
    the backend's own run id wins where there is one, as in the train task.
    """
    if backend != "tpu":
        print(f"training_backend={backend!r}: no cloud compute to release")
        return
    from components.tpu.orchestrate import release_run

    for released in release_run(project=gcp_project, zone=gcp_zone, run_id=run_id, variants=variants):
        print(released)

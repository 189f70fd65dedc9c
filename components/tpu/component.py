"""KFP component: the exit task that releases training compute, whatever happened."""

from typing import List

from kfp import dsl

from components.images import image


@dsl.component(base_image=image("tpu"), install_kfp_package=False)
def release_compute(backend: str, run_id: str, variants: List[str], gcp_project: str, gcp_zone: str,
                    trainjobs: bool = False):
    """Deletes the run's TPU VMs and (``trainjobs``) TrainJobs, named from the run id: an exit task may
    not depend on the train tasks. Never cached, so it may take the run-id placeholder."""
    from components.tpu.orchestrate import release_training

    for released in release_training(backend=backend, run_id=run_id, variants=variants, gcp_project=gcp_project,
                                     gcp_zone=gcp_zone, trainjobs=trainjobs):
        print(released)

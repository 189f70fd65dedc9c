"""KFP component: the PyTorch trainer on many machines through a Kubeflow Trainer ``TrainJob``
(created, followed, deleted by ``components.torch_train.trainjob``). It runs in the control image
(no torch: the nodes run the trainer image); the exit task ``release_compute`` deletes the run's
TrainJobs again whatever happened."""

from typing import List, NamedTuple, Optional

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from components.images import image


@dsl.component(base_image=image("tpu"), install_kfp_package=False)
def train_torch_trainjob(shards: Input[List[Dataset]], tokenizer: Input[Model], variant: str, plan: str,
                         trainer_image: str, model: Output[Model], hf_model: Output[Model], metrics: Output[Metrics],
                         loss_curve: Output[HTML], architecture: str = "", seq_lengths: List[int] = [],
                         train_steps: List[int] = [], global_batch_size: int = 0, micro_batch_size: int = 8,
                         learning_rate: float = 0.0, seed: int = 0, workers: int = 2, training_root: str = "",
                         namespace: str = "", runtime: str = "torch-distributed", num_nodes: int = 1,
                         gpus_per_node: int = 0, cpu: str = "", memory: str = "", node_selector: dict = {},
                         tolerations: list = [], service_account: str = "", timeout_hours: float = 168.0,
                         more_shards: Optional[Input[List[Dataset]]] = None
                         ) -> NamedTuple("Trained", seq_length=int, mask_rate=float):
    """``train_torch`` (same inputs and outputs) with ``num_nodes`` x ``gpus_per_node`` ranks in a
    TrainJob of ``namespace`` ('' = the pod's), the nodes running ``trainer_image``; deleted when this
    task ends, and again by the exit task."""
    from collections import namedtuple

    from components import artifacts
    from components.torch_train import trainjob
    from components.torch_train.step import record

    root = artifacts.data_root(model.uri, model.path)
    result = trainjob.train_step(
        trainjob.TrainJobControl(namespace or None), variant=variant, plan=plan,
        shard_dirs=[u for s in [*shards, *(more_shards or [])] for u in artifacts.data_files(s.uri, s.path)],
        tokenizer_dir=artifacts.data_root(tokenizer.uri, tokenizer.path), training_root=training_root,
        fallback_root=root, image=trainer_image, architecture=architecture, seq_lengths=list(seq_lengths) or None,
        train_steps=list(train_steps) or None, global_batch_size=global_batch_size or None,
        learning_rate=learning_rate or None, micro_batch_size=micro_batch_size, seed=seed, workers=workers,
        runtime=runtime, num_nodes=num_nodes, gpus_per_node=gpus_per_node, cpu=cpu, memory=memory,
        node_selector=dict(node_selector), tolerations=list(tolerations), service_account=service_account,
        timeout_s=timeout_hours * 3600)
    record(result, variant=variant, plan=plan, model=model, hf_model=hf_model, metrics=metrics,
           loss_curve=loss_curve, fallback_root=root, extra={"trainjob": f"{result['namespace']}/{result['name']}"})
    return namedtuple("Trained", ["seq_length", "mask_rate"])(int(result["seq_length"]), float(result["mask_rate"]))

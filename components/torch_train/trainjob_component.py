"""KFP components: the PyTorch trainer on many machines through a Kubeflow Trainer ``TrainJob``
(created, followed, deleted by ``components.torch_train.trainjob``), and the exit task that deletes
a run's TrainJobs whatever happened. Both run in the control image (no torch: the nodes run the
trainer image)."""

from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.images import image


@dsl.component(base_image=image("tpu"), install_kfp_package=False)
def train_torch_trainjob(shards: Input[List[Dataset]], tokenizer: Input[Model], variant: str, plan: str,
                         trainer_image: str, model: Output[Model], metrics: Output[Metrics], namespace: str = "",
                         runtime: str = "torch-distributed", num_nodes: int = 1, gpus_per_node: int = 0,
                         cpu: str = "", memory: str = "", node_selector: dict = {}, tolerations: list = [],
                         service_account: str = "", model_dir: str = "", architecture: str = "",
                         seq_lengths: List[int] = [], train_steps: List[int] = [], global_batch_size: int = 0,
                         micro_batch_size: int = 8, learning_rate: float = 0.0, seed: int = 0, workers: int = 2,
                         timeout_hours: float = 168.0):
    """Token shards -> a Hugging Face directory with its tokenizer (``hf`` under the training dir),
    trained by ``num_nodes`` x ``gpus_per_node`` under torchrun in a TrainJob of the pipeline's
    namespace (``namespace`` '' = the pod's). ``model_dir`` '' trains in the model artifact's own
    gs:// data dir. The TrainJob is deleted when this task ends, and again by the exit task."""
    from components import artifacts, reports
    from components.torch_train import trainjob

    root = model_dir or artifacts.data_root(model.uri, model.path)
    options = {"architecture": architecture, "seq-length": list(seq_lengths), "train-steps": list(train_steps),
               "global-batch-size": global_batch_size or None, "learning-rate": learning_rate or None,
               "micro-batch-size": micro_batch_size, "workers": workers, "seed": seed}
    result = trainjob.train_variant(
        trainjob.TrainJobControl(namespace or None), variant=variant, plan=plan,
        data=[uri for s in shards for uri in artifacts.data_files(s.uri, s.path)],
        tokenizer_dir=artifacts.data_root(tokenizer.uri, tokenizer.path), model_dir=root, image=trainer_image,
        trainer_options=options, runtime=runtime, num_nodes=num_nodes, gpus_per_node=gpus_per_node, cpu=cpu,
        memory=memory, node_selector=dict(node_selector), tolerations=list(tolerations),
        service_account=service_account, timeout_s=timeout_hours * 3600)
    stages = [{k: v for k, v in s.items() if k != "history"} for s in result["stages"]]
    artifacts.write_manifest(model.path, {"variant": variant, "plan": plan, "architecture": result["architecture"],
                                          "final_model_dir": artifacts.reference(root, result["hf_dir"]),
                                          "trainjob": result["name"], "stages": stages})
    model.metadata.update({"variant": variant, "plan": plan, "architecture": result["architecture"],
                           "model_dir": result["hf_dir"], "trainjob": f"{result['namespace']}/{result['name']}"})
    reports.log_metrics(metrics, {"trainjob_elapsed_s": result["elapsed_s"],
                                  **{f"stage{s['stage']}_{k}": s[k] for s in stages
                                     for k in ("loss", "steps_per_sec", "tokens_per_sec", "samples_per_sec", "tokens")
                                     if s.get(k) is not None}})


@dsl.component(base_image=image("tpu"), install_kfp_package=False)
def release_trainjobs(backend: str, run_id: str, variants: List[str], namespace: str = ""):
    """Deletes every TrainJob this run may have created (gone already is fine; a failure is loud).

    Names come from the run id, not from the train task (an exit task may not depend on tasks
    inside its exit handler). Never cached, so it may take the run-id placeholder; the backend's
    own run id wins where there is one, as in the train task.
    """
    if backend != "trainjob":
        print(f"training_backend={backend!r}: no TrainJob to release")
        return
    from components.torch_train import trainjob

    for released in trainjob.release_run(trainjob.TrainJobControl(namespace or None), run_id=run_id,
                                         variants=variants):
        print(released)

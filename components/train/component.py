"""KFP component: both training stages for one model variant (CPU here, or a TPU VM)."""

from typing import List, NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from components.images import image

TRAIN_IMAGE = image("train")


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def train_model(stage1_examples: Input[List[Dataset]], stage2_examples: Input[List[Dataset]],
                tokenizer: Input[Model], variant: str, model_size: str, backend: str,
                stage1_max_seq_length: int, stage1_max_predictions: int,
                stage2_max_seq_length: int, stage2_max_predictions: int,
                stage1_train_steps: int, stage2_train_steps: int, training_root: str, trainer_image: str,
                gcp_project: str, gcp_zone: str, tpu_accelerator_type: str, tpu_runtime_version: str,
                tpu_spot: bool, tpu_queued: bool, tpu_queue_timeout_hours: float, tpu_network: str,
                tpu_subnetwork: str, tpu_service_account: str,
                tpu_price_per_hour: float,
                model: Output[Model], metrics: Output[Metrics],
                loss_curve: Output[HTML], stage1_corpus: str = "cc100",
                next_sentence_prediction: bool = True) -> NamedTuple("Training", tpu_node=str, model_dir=str):
    """Stage 1 on CC-100 (or Wikipedia), then stage 2 on Wikipedia from stage 1's weights;
    ``stage1_corpus='none'``: stage 2 only, from scratch (KFP has no optional list input: the DAG
    passes the stage-2 examples as ``stage1_examples`` too, unread). ``next_sentence_prediction``
    False: MLM only.

    No run-scoped input (the task stays cacheable): the training dir is named by the inputs'
    content under ``training_root`` (compile-time; '' = inside this task's output), and the
    TPU node's run id comes from the backend (``components.run_identity``), as in the exit
    task. ``trainer_image`` is fixed at compile time (the image the TPU VM runs).
    """
    from collections import namedtuple

    from components import artifacts, reports
    from components.train.stages import train_variant

    def shards(examples):
        out = []
        for e in examples:
            manifest = artifacts.read_manifest(e.path)
            out.append({"shard": manifest.get("shard", ""),
                        "files": {n: artifacts.resolve(e.uri, e.path, n) for n in manifest["files"]}})
        return out

    tpu = None
    if backend == "tpu":
        tpu = {"project": gcp_project, "zone": gcp_zone, "trainer_image": trainer_image,
               "accelerator_type": tpu_accelerator_type, "runtime_version": tpu_runtime_version or None,
               "spot": bool(tpu_spot), "queued": bool(tpu_queued),
               "queue_timeout_s": float(tpu_queue_timeout_hours) * 3600, "network": tpu_network or None,
               "subnetwork": tpu_subnetwork or None, "service_account": tpu_service_account or None,
               "price_per_hour": float(tpu_price_per_hour)}
    model_root = artifacts.data_root(model.uri, model.path)
    result = train_variant(
        variant=variant, model_size=model_size, stage1_shards=shards(stage1_examples),
        stage2_shards=shards(stage2_examples), tokenizer_dir=artifacts.data_root(tokenizer.uri, tokenizer.path),
        backend=backend, training_root=training_root, fallback_root=model_root, tpu=tpu,
        train_steps=(int(stage1_train_steps), int(stage2_train_steps)),
        shapes=((int(stage1_max_seq_length), int(stage1_max_predictions)),
                (int(stage2_max_seq_length), int(stage2_max_predictions))),
        single_stage=stage1_corpus == "none", next_sentence_prediction=bool(next_sentence_prediction))
    plan = result.pop("plan")
    # Inside this artifact: relative, so a consumer in another pod resolves it from its view; else the URI.
    final_dir = artifacts.reference(model_root, result["model_dir"])
    artifacts.write_manifest(model.path, {"variant": variant, "model_size": model_size, "stages": plan,
                                          "training_dir": result["training_dir"], "final_model_dir": final_dir,
                                          "result": result})
    model.metadata.update({"variant": variant, "model_size": model_size, "model_dir": result["model_dir"],
                           "training_dir": result["training_dir"]})
    reports.log_metrics(metrics, {
        **{f"stage{s.get('stage', '')}_{k}": v for s in result.get("stages", []) for k, v in s.items() if k != "history"},
        **{k: result[k] for k in ("tpu_hours", "estimated_cost", "recreations") if k in result}})
    history = reports.stage_loss_series(result.get("stages", []))  # a series per stage
    with open(loss_curve.path, "w") as f:
        f.write(reports.loss_curve_html(f"Training loss ({variant}, {model_size})", history))
    return namedtuple("Training", ["tpu_node", "model_dir"])(result.get("node_name", ""), result["model_dir"])

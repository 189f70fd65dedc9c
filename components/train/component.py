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
                stage1_train_steps: int, stage2_train_steps: int, run_id: str, trainer_image: str,
                gcp_project: str, gcp_zone: str, tpu_accelerator_type: str, tpu_runtime_version: str,
                tpu_spot: bool, tpu_queued: bool, tpu_network: str, tpu_subnetwork: str, tpu_service_account: str,
                tpu_price_per_hour: float,
                model: Output[Model], metrics: Output[Metrics],
                loss_curve: Output[HTML]) -> NamedTuple("Training", tpu_node=str, model_dir=str):
    """Stage 1 on CC-100, then stage 2 on Wikipedia from stage 1's weights.

    ``trainer_image`` is fixed at compile time (the image the TPU VM runs), so a
    registry chosen when compiling is the one the VM pulls from. The TPU node's name is derived from the run id and the variant, the same way the
    exit task derives it, so the exit task can always delete it.
    """
    from collections import namedtuple

    from components import artifacts, reports
    from components.train.stages import stage_plan, train_stages

    def uris(examples):
        return [f for e in examples for f in artifacts.data_files(e.uri, e.path)]

    model_root = artifacts.data_root(model.uri, model.path)
    plan = stage_plan(config=model_size, stage1_data=uris(stage1_examples), stage2_data=uris(stage2_examples),
                      model_root=model_root, train_steps=(int(stage1_train_steps), int(stage2_train_steps)),
                      shapes=((int(stage1_max_seq_length), int(stage1_max_predictions)),
                              (int(stage2_max_seq_length), int(stage2_max_predictions))))
    tpu, node = None, ""
    if backend == "tpu":
        from components.tpu.control import tpu_node_name

        node = tpu_node_name(run_id, variant)
        tpu = {"project": gcp_project, "zone": gcp_zone, "node_name": node, "trainer_image": trainer_image,
               "accelerator_type": tpu_accelerator_type, "runtime_version": tpu_runtime_version or None,
               "spot": bool(tpu_spot), "queued": bool(tpu_queued), "network": tpu_network or None,
               "subnetwork": tpu_subnetwork or None, "service_account": tpu_service_account or None,
               "price_per_hour": float(tpu_price_per_hour),
               "labels": {"bertja-run": run_id[-63:].lower(), "bertja-variant": variant}}
    tokenizer_dir = artifacts.data_root(tokenizer.uri, tokenizer.path)
    result = train_stages(plan, tokenizer_dir=tokenizer_dir, backend=backend, tpu=tpu)
    # The final model dir relative to the artifact, so a consumer in another pod resolves it from its view.
    (final_dir,) = artifacts.relative_names(model_root, [result["model_dir"]])
    artifacts.write_manifest(model.path, {"variant": variant, "model_size": model_size, "stages": plan,
                                          "final_model_dir": final_dir, "result": result})
    model.metadata.update({"variant": variant, "model_size": model_size, "model_dir": result["model_dir"]})
    reports.log_metrics(metrics, {
        **{f"stage{s.get('stage', '')}_{k}": v for s in result.get("stages", []) for k, v in s.items() if k != "history"},
        **{k: result[k] for k in ("tpu_hours", "estimated_cost", "recreations") if k in result}})
    history = [p for s in result.get("stages", []) for p in s.get("history", [])]
    with open(loss_curve.path, "w") as f:
        f.write(reports.loss_curve_html(f"Training loss ({variant}, {model_size})", history))
    return namedtuple("Training", ["tpu_node", "model_dir"])(node, result["model_dir"])

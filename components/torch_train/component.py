"""KFP component: a plan's stages with the PyTorch trainer, in the pod (CPU here; a GPU pod where
the DAG sets kfp-kubernetes accelerator settings). Runs in the convert image (torch +
transformers, no TensorFlow) until a dedicated CPU/GPU trainer image exists."""

from typing import List

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from components.images import image


@dsl.component(base_image=image("convert"), install_kfp_package=False)
def train_torch(shards: Input[List[Dataset]], tokenizer: Input[Model], variant: str, plan: str,
                model: Output[Model], metrics: Output[Metrics], loss_curve: Output[HTML], architecture: str = "",
                seq_lengths: List[int] = [], train_steps: List[int] = [], global_batch_size: int = 0,
                micro_batch_size: int = 8, learning_rate: float = 0.0, seed: int = 0, workers: int = 2):
    """Token shards (``pretraining_data(..., data_format="shards")`` outputs) -> a Hugging Face
    directory with the tokenizer (``hf`` inside ``model``). Empty/0 values take the plan's.
    Per-stage steps/s, tokens/s and samples/s go to the KFP metrics; the loss curve has a
    series per stage."""
    from components import artifacts, reports
    from components.torch_train.trainer import train

    data = [uri for s in shards for uri in artifacts.data_files(s.uri, s.path)]
    root = artifacts.data_root(model.uri, model.path)
    result = train(plan=plan, architecture=architecture or None, data_uris=data, model_dir=root,
                   tokenizer_dir=artifacts.data_root(tokenizer.uri, tokenizer.path),
                   seq_lengths=list(seq_lengths) or None, train_steps=list(train_steps) or None,
                   global_batch_size=global_batch_size or None, learning_rate=learning_rate or None,
                   micro_batch_size=micro_batch_size, seed=seed, workers=workers)
    stages = [{k: v for k, v in s.items() if k != "history"} for s in result["stages"]]
    artifacts.write_manifest(model.path, {"variant": variant, "plan": plan, "architecture": result["architecture"],
                                          "final_model_dir": artifacts.reference(root, result["hf_dir"]),
                                          "stages": stages})
    model.metadata.update({"variant": variant, "plan": plan, "architecture": result["architecture"],
                           "model_dir": result["hf_dir"]})
    reports.log_metrics(metrics, {f"stage{s['stage']}_{k}": s[k] for s in stages
                                  for k in ("loss", "steps_per_sec", "tokens_per_sec", "samples_per_sec", "tokens")
                                  if s.get(k) is not None})
    with open(loss_curve.path, "w") as f:
        f.write(reports.loss_curve_html(f"Training loss ({variant}, {plan})",
                                        reports.stage_loss_series(result["stages"])))

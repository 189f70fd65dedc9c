"""KFP component: a plan's stages with the PyTorch trainer, in the pod (CPU here; a GPU pod where
the DAG sets kfp-kubernetes accelerator settings and compiles this same function on the GPU
image, ``pipelines.pretraining``). Runs in the convert image (torch + transformers, no
TensorFlow) on CPU profiles."""

from typing import List, NamedTuple, Optional

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from components.images import image


@dsl.component(base_image=image("convert"), install_kfp_package=False)
def train_torch(shards: Input[List[Dataset]], tokenizer: Input[Model], variant: str, plan: str,
                model: Output[Model], hf_model: Output[Model], metrics: Output[Metrics], loss_curve: Output[HTML],
                architecture: str = "", seq_lengths: List[int] = [], train_steps: List[int] = [],
                global_batch_size: int = 0, micro_batch_size: int = 8, learning_rate: float = 0.0, seed: int = 0,
                workers: int = 2, training_root: str = "",
                processes: int = 1,
                more_shards: Optional[Input[List[Dataset]]] = None) -> NamedTuple("Trained", seq_length=int, mask_rate=float):
    """Token shards (``pretraining_data(..., data_format="shards")`` outputs) -> ``hf_model``: a
    Hugging Face directory with the tokenizer, what evaluate and publish take. ``model``: the
    training record (stages, where the training dir is). Empty/0 values take the plan's;
    ``architecture`` 'tiny' is the plan's family at its tiny shape. ``training_root``
    (compile-time; '' = inside ``model``): content-named, resumable training dirs.
    ``processes`` > 1: torchrun with that many ranks. Returns the last stage's sequence length and
    masking rate (what held-out evaluation masks at). ``more_shards``: a second corpus's shards (a
    KFP list input takes one loop's outputs), trained on together with ``shards``. Per-stage steps/s, tokens/s and samples/s
    go to the KFP metrics; the loss curve has a series per stage."""
    from collections import namedtuple

    from components import artifacts
    from components.torch_train.step import record, train_step

    data = [uri for s in [*shards, *(more_shards or [])] for uri in artifacts.data_files(s.uri, s.path)]
    root = artifacts.data_root(model.uri, model.path)
    result = train_step(variant=variant, plan=plan, architecture=architecture, shard_dirs=data,
                        tokenizer_dir=artifacts.data_root(tokenizer.uri, tokenizer.path), training_root=training_root,
                        fallback_root=root, seq_lengths=list(seq_lengths) or None,
                        train_steps=list(train_steps) or None, global_batch_size=global_batch_size or None,
                        learning_rate=learning_rate or None, micro_batch_size=micro_batch_size, seed=seed,
                        workers=workers, processes=processes)
    record(result, variant=variant, plan=plan, model=model, hf_model=hf_model, metrics=metrics,
           loss_curve=loss_curve, fallback_root=root)
    return namedtuple("Trained", ["seq_length", "mask_rate"])(int(result["seq_length"]), float(result["mask_rate"]))

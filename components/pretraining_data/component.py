"""KFP component: whole-word-masking TFRecords for one shard (run per shard in a ParallelFor)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from components.images import image

DATA_IMAGE = image("data")


@dsl.component(base_image=DATA_IMAGE, install_kfp_package=False)
def pretraining_data(shards: Input[Dataset], shard: str, tokenizer: Input[Model], max_seq_length: int,
                     max_predictions: int, dupe_factor: int, masked_lm_prob: float, short_seq_prob: float,
                     base_seed: int, examples: Output[Dataset], stats: Output[Metrics], samples: Output[Markdown]):
    """One shard -> GZIP TFRecords (Model Garden v2 features) + a JSON summary.

    The seed is derived from the base seed and the shard's name, so shards differ
    and a re-run of the same shard is byte-identical.
    """
    from components import artifacts, reports, storage
    from components.pretraining_data.create import create_pretraining_data, shard_seed
    from components.pretraining_data.preview import preview_markdown
    from components.resources import available_cpus

    root = artifacts.data_root(examples.uri, examples.path)
    name = "pretraining_data.tfrecord.gz"
    summary = create_pretraining_data(
        artifacts.resolve(shards.uri, shards.path, shard), storage.join(root, name),
        artifacts.data_root(tokenizer.uri, tokenizer.path),
        max_seq_length=int(max_seq_length), max_predictions=int(max_predictions), dupe_factor=int(dupe_factor),
        masked_lm_prob=float(masked_lm_prob), short_seq_prob=float(short_seq_prob),
        seed=shard_seed(int(base_seed), shard), workers=available_cpus())
    artifacts.write_manifest(examples.path, {"files": [name], "shard": shard, "max_seq_length": int(max_seq_length),
                                             "max_predictions": int(max_predictions), "stats": summary})
    examples.metadata.update({"shard": shard, "instances": summary.get("instances")})
    reports.log_metrics(stats, summary)
    with open(samples.path, "w") as f:
        f.write(preview_markdown(storage.join(root, name), artifacts.data_root(tokenizer.uri, tokenizer.path),
                                 title=f"Sample instances of {shard}"))

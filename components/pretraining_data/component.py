"""KFP component: masked-LM TFRecords or token shards for one corpus shard (run per shard in a ParallelFor)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from components.images import image

DATA_IMAGE = image("data")


@dsl.component(base_image=DATA_IMAGE, install_kfp_package=False)
def pretraining_data(shards: Input[Dataset], shard: str, tokenizer: Input[Model], max_seq_length: int,
                     max_predictions: int, dupe_factor: int, masked_lm_prob: float, short_seq_prob: float,
                     base_seed: int, examples: Output[Dataset], stats: Output[Metrics], samples: Output[Markdown],
                     whole_word_masking: bool = True, next_sentence_prediction: bool = True,
                     data_format: str = "tfrecord", words: Input[Dataset] = None, stage1_corpus: str = ""):
    """One shard -> GZIP TFRecords (Model Garden v2 features) + a JSON summary, or (``data_format``
    "shards") the shard's token shards for the PyTorch trainer (unmasked; masking parameters unused).

    The seed is derived from the base seed and the shard's name, so shards differ
    and a re-run of the same shard is byte-identical. ``words``: the shards' word-split
    files (``split_words``), read instead of the text by MeCab tokenizers (wordpiece,
    character) split with the same dictionary; the output is the same either way.
    ``stage1_corpus`` (given to stage-1 tasks only): 'none', a one-stage recipe, whose training
    reads no stage-1 data: an empty dataset at once (the DAG keeps one layout for both kinds).
    """
    from components import artifacts, reports, storage
    from components.errors import BadInput
    from components.pretraining_data.create import create_pretraining_data, shard_seed
    from components.pretraining_data.preview import preview_markdown, shards_markdown
    from components.pretraining_data.shards import write_token_shards
    from components.resources import available_cpus
    from components.words.split import WORDS_SUFFIX, words_or_text

    if stage1_corpus == "none":
        artifacts.write_manifest(examples.path, {"files": [], "shard": shard, "format": data_format, "stats": {},
                                                 "skipped": "stage1_corpus 'none': one training stage"})
        examples.metadata.update({"shard": shard, "skipped": True})
        with open(samples.path, "w") as f:
            f.write(f"{shard}: not made (stage1_corpus 'none': the recipe trains one stage)\n")
        return
    root = artifacts.data_root(examples.uri, examples.path)
    vocab_dir = artifacts.data_root(tokenizer.uri, tokenizer.path)
    listed = words is not None and shard + WORDS_SUFFIX in artifacts.read_manifest(words.path).get("files", [])
    source, use_words = words_or_text(artifacts.resolve(shards.uri, shards.path, shard),
                                      artifacts.resolve(words.uri, words.path, shard + WORDS_SUFFIX) if listed
                                      else None, vocab_dir)
    if data_format == "shards":
        name = "tokens"
        summary = write_token_shards(source, storage.join(root, name), vocab_dir, workers=available_cpus(),
                                     words=use_words)
        artifacts.write_manifest(examples.path, {"files": [name], "format": "shards", "shard": shard,
                                                 "stats": summary})
        examples.metadata.update({"shard": shard, "format": "shards", "tokens": summary["tokens"]})
        reports.log_metrics(stats, summary)
        with open(samples.path, "w") as f:
            f.write(shards_markdown(storage.join(root, name), vocab_dir, title=f"Token shards of {shard}"))
        return
    if data_format != "tfrecord":
        raise BadInput(f"data_format={data_format!r}: not 'tfrecord' or 'shards'")
    name = "pretraining_data.tfrecord.gz"
    summary = create_pretraining_data(
        source, storage.join(root, name), vocab_dir,
        max_seq_length=int(max_seq_length), max_predictions=int(max_predictions), dupe_factor=int(dupe_factor),
        masked_lm_prob=float(masked_lm_prob), short_seq_prob=float(short_seq_prob),
        seed=shard_seed(int(base_seed), shard), workers=available_cpus(),
        whole_word_masking=bool(whole_word_masking), next_sentence_prediction=bool(next_sentence_prediction),
        words=use_words)
    artifacts.write_manifest(examples.path, {"files": [name], "shard": shard, "max_seq_length": int(max_seq_length),
                                             "max_predictions": int(max_predictions), "stats": summary})
    examples.metadata.update({"shard": shard, "instances": summary.get("instances")})
    reports.log_metrics(stats, summary)
    with open(samples.path, "w") as f:
        f.write(preview_markdown(storage.join(root, name), vocab_dir, title=f"Sample instances of {shard}"))

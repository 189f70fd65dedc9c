"""KFP component: every shard of a shards dataset -> its MeCab words (one cached step for all variants)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components.images import image

DATA_IMAGE = image("data")


@dsl.component(base_image=DATA_IMAGE, install_kfp_package=False)
def split_words(shards: Input[Dataset], mecab_dic: str, words: Output[Dataset], stats: Output[Metrics],
                enabled: bool = True):
    """Writes ``NAME.words.gz`` (+ ``.meta.json``) for each shard ``NAME`` of ``shards``.

    The manifest keeps the shards' ``files``/``train``/``heldout`` lists with the
    words names, so ``sample_corpus`` samples it as it samples the shards, and
    ``pretraining_data(words=...)`` finds a shard's words by the shard's name.
    ``enabled`` false (the run has no MeCab variant): nothing is split, the dataset is empty.
    """
    from components import artifacts, reports, storage
    from components.resources import available_cpus
    from components.words.split import WORDS_SUFFIX, split_many

    if not enabled:  # no variant of this run reads MeCab words: an empty dataset, the data steps read text
        artifacts.write_manifest(words.path, {"files": [], "train": [], "heldout": [], "mecab_dic": mecab_dic,
                                              "stats": {"shards": 0}})
        return
    manifest = artifacts.read_manifest(shards.path)
    root = artifacts.data_root(words.uri, words.path)
    pairs = [(artifacts.resolve(shards.uri, shards.path, name), storage.join(root, *(name + WORDS_SUFFIX).split("/")))
             for name in manifest["files"]]
    totals = split_many(pairs, mecab_dic=mecab_dic, workers=available_cpus())
    renamed = {key: [name + WORDS_SUFFIX for name in manifest[key]]
               for key in ("files", "train", "heldout") if key in manifest}
    artifacts.write_manifest(words.path, {**renamed, "mecab_dic": mecab_dic, "stats": totals})
    words.metadata.update({"mecab_dic": mecab_dic, "words": totals["words"]})
    reports.log_metrics(stats, totals)

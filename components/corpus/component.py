"""KFP components: Wikipedia sentence corpus, merge/split into shards, tokenizer sample."""

from typing import List, NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Output

from components.images import image

DATA_IMAGE = image("data")


@dsl.component(base_image=DATA_IMAGE, install_kfp_package=False)
def wiki_corpus(wikipedia: Input[Dataset], min_sentence_length: int, max_sentence_length: int, mecab_dic: str,
                corpus: Output[Dataset], stats: Output[Metrics], report: Output[Markdown]):
    """CirrusSearch dump -> one sentence per line, blank line between pages (SPEC 6.1)."""
    from components import artifacts, reports, storage
    from components.corpus.wiki import build_wiki_corpus
    from components.resources import available_cpus

    (src,) = artifacts.data_files(wikipedia.uri, wikipedia.path)
    root = artifacts.data_root(corpus.uri, corpus.path)
    result = build_wiki_corpus(src,
                               storage.join(root, "corpus.txt.gz"),
                               min_length=min_sentence_length, max_length=max_sentence_length,
                               mecab_dic=mecab_dic, workers=available_cpus())
    artifacts.write_manifest(corpus.path, {"files": ["corpus.txt.gz"], "stats": result})
    reports.log_metrics(stats, result)
    with open(report.path, "w") as f:
        f.write(reports.markdown_table("Wikipedia corpus", result))


@dsl.component(base_image=DATA_IMAGE, install_kfp_package=False)
def split_corpus(source: Input[Dataset], num_files: int, heldout_files: int, seed: int, shards: Output[Dataset],
                 report: Output[Markdown]) -> NamedTuple("Split", names=List[str], heldout_names=List[str]):
    """Deals whole documents into ``num_files`` training shards plus ``heldout_files`` held-out ones."""
    from collections import namedtuple

    from components import artifacts, reports
    from components.corpus.split import split_corpus as split

    inputs = artifacts.data_files(source.uri, source.path)
    root = artifacts.data_root(shards.uri, shards.path)
    total = int(num_files) + int(heldout_files)
    result = split(inputs, root, num_files=total, seed=int(seed))
    names = artifacts.relative_names(root, result["files"])
    train, heldout = names[:int(num_files)], names[int(num_files):]
    stats = {k: v for k, v in result.items() if k != "files"}
    artifacts.write_manifest(shards.path, {"files": names, "train": train, "heldout": heldout, "stats": stats})
    with open(report.path, "w") as f:
        f.write(reports.markdown_table("Shards", {"training shards": len(train), "held-out shards": len(heldout),
                                                  **stats}))
    return namedtuple("Split", ["names", "heldout_names"])(train, heldout)


@dsl.component(base_image=DATA_IMAGE, install_kfp_package=False)
def sample_corpus(shards: Input[Dataset], lines: int, seed: int, sample: Output[Dataset]):
    """Random non-empty lines for tokenizer training (recipe: 10M from Wikipedia)."""
    from components import artifacts, storage
    from components.corpus.sample import sample_lines

    inputs = artifacts.data_files(shards.uri, shards.path, "train")  # never the held-out shard
    root = artifacts.data_root(sample.uri, sample.path)
    result = sample_lines(inputs, storage.join(root, "sample.txt"), lines=int(lines), seed=int(seed))
    artifacts.write_manifest(sample.path, {"files": ["sample.txt"], "stats": result})

"""``bertja``: one console script for every step, benchmark and pipeline command.

Each command lives next to the code it runs (``components/<step>/cli.py`` or
``pipelines/...``) and exposes ``main(argv, prog)``. Modules are imported only
when their command runs, so ``bertja corpus`` never pays for TensorFlow or KFP.
"""

from __future__ import annotations

import importlib
import sys

from components.errors import BadInput

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "download": ("components.download.cli", "download a URL (https, http, gs, file) resumably and verified"),
    "resolve-sources": ("components.download.sources_cli", "resolve dump dates to concrete source URLs"),
    "corpus": ("components.corpus.cli", "wiki | split | sample: build sentence corpora"),
    "alphabet": ("components.tokenizer.alphabet_cli", "character alphabet from UniDic lex.csv"),
    "tokenizer": ("components.tokenizer.cli", "train | character: WordPiece and character tokenizers"),
    "split-words": ("components.words.cli", "a shard's MeCab words, once for every variant"),
    "pretraining-data": ("components.pretraining_data.cli", "whole-word-masking TFRecords for one shard"),
    "train": ("components.train.cli", "TF Model Garden BERT pretraining (CPU or TPU)"),
    "convert": ("components.convert.cli", "Model Garden checkpoint -> Hugging Face directory"),
    "evaluate": ("components.evaluate.cli", "fill-mask, masked-LM accuracy, optional fine-tuning"),
    "publish": ("components.publish.cli", "copy a converted model to a release location with a model card"),
    "tpu": ("components.tpu.cli", "create | status | delete a Cloud TPU VM"),
    "trainjob": ("components.torch_train.trainjob_cli", "create | follow | delete | gc Kubeflow Trainer TrainJobs (torch, many nodes)"),
    "compile": ("pipelines.commands", "compile the pipeline to YAML"),
    "run": ("pipelines.commands", "run the pipeline (--local: kfp.local on this machine)"),
    "submit": ("pipelines.commands", "submit a run to a KFP endpoint"),
    "schedule": ("pipelines.commands", "create a recurring run on a KFP endpoint"),
    "recipes": ("pipelines.commands", "list the recipes (seed systems) compile/run/submit/schedule --recipe take"),
    "bench": ("pipelines.bench", "tokenizer | corpus-wiki | pretraining-data | train benchmarks"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: bertja COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_m, help_) in COMMANDS.items()]
    lines += ["", "Run 'bertja COMMAND --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"bertja: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        # Modules that serve several commands (pipelines.commands) get the name.
        if getattr(module, "MULTI_COMMAND", False):
            return int(module.main(rest, prog=f"bertja {name}", command=name) or 0)
        return int(module.main(rest, prog=f"bertja {name}") or 0)
    except BadInput as e:
        print(f"bertja {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Merge corpora and deal whole documents into N shard files (SPEC 6.2).

As in the recipe, every line is whitespace-normalised, a document (lines up to
a blank line) goes whole into one shard, and the shard for each next document
is drawn at random with a fixed seed. Two fixes: the first draw is in range
(the recipe's is off by one, which fails for N=1 and 1/N of the time), and an
input that does not end in a blank line has its last document closed, so it
does not run on into the next input's first document. Runs of blank lines do
not make empty documents.
"""

from __future__ import annotations

import contextlib
import random
import re

from components import storage
from components.errors import BadInput
from components.progress import Progress


def input_list(inputs: list[str] | str) -> list[str]:
    """The corpus inputs as a non-empty list (one URI may be passed bare)."""
    inputs = [inputs] if isinstance(inputs, str) else list(inputs)
    if not inputs:
        raise BadInput("inputs: at least one input file is needed")
    return inputs


def shard_names(num_files: int, prefix: str = "corpus_") -> list[str]:
    """``corpus_01.txt`` ... (1-based, two digits at least, like the recipe)."""
    return [f"{prefix}{i:02d}.txt" for i in range(1, num_files + 1)]


def split_corpus(inputs: list[str], output_dir: str, *, num_files: int, seed: int = 0,
                 prefix: str = "corpus_") -> dict:
    """Writes ``num_files`` shards under ``output_dir``; returns their URIs and counts.

    Inputs may be plain, ``.gz`` or ``.xz``, local or ``gs://``. All shards are
    written at once, streaming, and appear only when every input was read. Then
    shards an earlier run left there (``PREFIX<digits>.txt`` beyond this run's)
    are removed, so a glob over the directory sees exactly this run's shards;
    other files are not touched.
    """
    inputs = input_list(inputs)
    if num_files < 1:
        raise BadInput(f"num_files={num_files}: must be >= 1")
    storage.check_outputs(inputs, dirs=[output_dir])
    files = [storage.join(output_dir, name) for name in shard_names(num_files, prefix)]
    documents = [0] * num_files
    lines = [0] * num_files
    rng = random.Random(seed)
    progress = Progress("split corpus", "lines")
    with contextlib.ExitStack() as stack:
        outs = [stack.enter_context(storage.open_write(uri, text=True)) for uri in files]
        shard = rng.randrange(num_files)
        in_document = False
        for uri in inputs:
            for _lineno, raw in storage.iter_lines(uri):
                line = " ".join(raw.split())
                progress.add()
                if line:
                    outs[shard].write(line + "\n")
                    lines[shard] += 1
                    in_document = True
                elif in_document:
                    outs[shard].write("\n")
                    documents[shard] += 1
                    shard = rng.randrange(num_files)
                    in_document = False
            if in_document:  # close a document the input left open
                outs[shard].write("\n")
                documents[shard] += 1
                shard = rng.randrange(num_files)
                in_document = False
    storage.prune(output_dir, re.escape(prefix) + r"\d{2,}\.txt", keep=files)
    seconds = progress.done()
    return {"files": files, "documents_per_file": documents, "lines_per_file": lines,
            "documents": sum(documents), "lines": sum(lines), "seconds": round(seconds, 3)}

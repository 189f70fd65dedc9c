"""Where a PyTorch-trainer recipe's run ends until that trainer exists (issue 13).

rinna-roberta, modernbert-ja and bybert train with the PyTorch trainer (SPEC 8), which this
pipeline does not have yet. Their runs build everything the trainer will read -- the tokenizer
and the token shards of each corpus -- and end here: the tokenizer is copied to the release
location beside ``bertja_torch_data.json`` (what was built, where the shards are, and why
training did not run), and the same message goes to the log and the step's Markdown.
"""

from __future__ import annotations

import json

from components import storage

HANDOFF_FILE = "bertja_torch_data.json"
HANDOFF_VERSION = 1


def pending_message(variant: str) -> str:
    return (f"{variant}: tokenizer and token shards are ready; training them needs the PyTorch trainer "
            "(issue 13), which this pipeline does not have yet, so this run ends here")


def write_handoff(target: str, *, variant: str, tokenizer_dir: str, shards: dict[str, list[dict]],
                  settings: dict) -> dict:
    """Copies the tokenizer to ``{target}/tokenizer`` and writes ``{target}/bertja_torch_data.json``.

    ``shards``: corpus -> per shard ``{"shard", "files": [uri, ...], "stats": {...}}``. The shards stay
    where the data step wrote them (one pass, large); the manifest names them by URI.
    """
    copied = storage.copy_tree(tokenizer_dir, storage.join(target, "tokenizer"))
    manifest = {"format_version": HANDOFF_VERSION, "trainer": "torch", "variant": variant,
                "message": pending_message(variant), "tokenizer": storage.join(target, "tokenizer"),
                "tokenizer_files": len(copied), "shards": shards, "settings": settings}
    storage.write_text(storage.join(target, HANDOFF_FILE),
                       json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=True) + "\n")
    return manifest


def handoff_markdown(manifest: dict) -> str:
    counts = {corpus: len(items) for corpus, items in manifest["shards"].items()}
    lines = [f"## {manifest['variant']}: training needs the PyTorch trainer", "", manifest["message"] + ".", "",
             f"- tokenizer: `{manifest['tokenizer']}`"]
    lines += [f"- {corpus}: {n} token shard(s)" for corpus, n in counts.items()]
    return "\n".join(lines) + "\n"

"""Publishing (recipe step 12): a converted model goes to a release location with a model card.

The release is all-or-nothing for its readers:
- Everything is first copied to a staging prefix beside the release (``RELEASE.staging-ID``),
  together with the generated ``README.md`` (model card); any failure there leaves the release
  untouched.
- Local paths: the staging directory is then renamed onto the release name (one atomic
  ``rename``; an existing release with ``overwrite`` is moved aside first and deleted after).
- ``gs://``: GCS has no multi-object rename. Staged objects are copied server-side to the final
  names, then ``bertja_release.json`` (the manifest: every file with size and SHA-256) is written
  LAST. A release is complete exactly when its manifest exists; each object on its own is always
  whole. A failed publish leaves no manifest (re-running completes it); an overwrite removes the
  old manifest before touching any file, so a half-replaced release never looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import time
import uuid

from components import storage
from components.errors import BadInput
from components.publish import naming
from components.tokenizer import files as tokenizer_files

MODEL_CARD = "README.md"
MANIFEST = "bertja_release.json"
REQUIRED_FILES = ("config.json", "model.safetensors", tokenizer_files.TOKENIZER_CONFIG_FILE)
# and the vocabulary: vocab.txt (WordPiece/character) or tokenizer.json (SentencePiece, bytes)
VOCABULARY_FILES = (tokenizer_files.VOCAB_FILE, tokenizer_files.FAST_TOKENIZER_FILE)
CONVERSION_FILE = "bertja_conversion.json"
SIZES = {(768, 12): "base", (1024, 24): "large"}
DEFAULT_LICENSE = "apache-2.0"  # the licence of Tohoku's released bert-japanese models

# What a card says about each known training source (matched by name, case-insensitive).
SOURCE_NOTES = {
    "wikipedia": ("wikipedia", "Japanese Wikipedia (CirrusSearch content dump). Text licensed "
                               "CC BY-SA 4.0 (older revisions CC BY-SA 3.0) and GFDL."),
    "cc-100": ("cc100", "CC-100 Japanese (ja.txt.xz), monolingual text extracted from Common Crawl "
                        "snapshots; use is subject to the Common Crawl terms of use."),
}


def count_parameters(safetensors_uri: str) -> int:
    """Parameter count from a safetensors header alone (no torch, no full read)."""
    with storage.open_read(safetensors_uri, decompress=False) as f:
        head = f.read(8)
        if len(head) < 8:
            raise BadInput(f"{safetensors_uri}: not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", head)
        if length > 100 * 1024 * 1024:
            raise BadInput(f"{safetensors_uri}: not a safetensors file (header length {length})")
        try:
            header = json.loads(f.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BadInput(f"{safetensors_uri}: corrupt safetensors header ({e})") from e
    total = 0
    for name, info in header.items():
        if name != "__metadata__":
            n = 1
            for dim in info["shape"]:
                n *= dim
            total += n
    return total


def describe_model(model_dir: str) -> dict:
    """Sizes and tokenizer of a converted model directory (what the card and defaults need)."""
    for names in [(name,) for name in REQUIRED_FILES] + [VOCABULARY_FILES]:
        if not any(storage.exists(storage.join(model_dir, name)) for name in names):
            raise BadInput(f"{storage.join(model_dir, names[0])}: missing; publish takes a converted model "
                           "directory (bertja convert)")
    config = storage.read_json_object(storage.join(model_dir, "config.json"))
    tokenizer = storage.read_json_object(storage.join(model_dir, tokenizer_files.TOKENIZER_CONFIG_FILE))
    try:
        hidden, layers = int(config["hidden_size"]), int(config["num_hidden_layers"])
        info = {
            "hidden_size": hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": int(config["num_attention_heads"]),
            "intermediate_size": int(config["intermediate_size"]),
            "vocab_size": int(config["vocab_size"]),
            "max_position_embeddings": int(config["max_position_embeddings"]),
            "hidden_act": config.get("hidden_act"),
        }
    except (KeyError, TypeError, ValueError) as e:
        raise BadInput(f"{storage.join(model_dir, 'config.json')}: missing or bad BERT size ({e})") from e
    info["size"] = SIZES.get((hidden, layers), f"{layers}L-{hidden}H")
    info["subword_tokenizer_type"] = tokenizer.get("subword_tokenizer_type", "wordpiece")
    info["mecab_dic"] = (tokenizer.get("mecab_kwargs") or {}).get("mecab_dic", tokenizer_files.DEFAULT_MECAB_DIC)
    info["do_lower_case"] = bool(tokenizer.get("do_lower_case", False))
    info["num_parameters"] = count_parameters(storage.join(model_dir, "model.safetensors"))
    conversion_uri = storage.join(model_dir, CONVERSION_FILE)
    if storage.exists(conversion_uri):
        conversion = storage.read_json_object(conversion_uri)
        info["global_step"] = conversion.get("global_step")
        if (hidden, layers) not in SIZES and conversion.get("training_config"):
            info["size"] = str(conversion["training_config"])  # e.g. the laptop profile "tiny"
    return info


def default_model_name(info: dict) -> str:
    """Tohoku's naming: bert-base-japanese, bert-large-japanese-char, ..."""
    return naming.model_name(info["size"], info["subword_tokenizer_type"])


def _normalise_sources(sources) -> list[dict]:
    """Sources as a list of ``{"name", ...details}``.

    Accepts ``{name: {detail: value}}``, flat ``{"wikipedia_dump_date": ..., "cc100_url": ...}``
    (grouped by the known source the key starts with), a list of ``{"name": ...}`` or a JSON URI.
    """
    if sources is None:
        return []
    if isinstance(sources, str):
        sources = storage.read_json_object(sources)
    if isinstance(sources, list) and all(isinstance(s, dict) and "name" in s for s in sources):
        return [dict(s) for s in sources]
    if not isinstance(sources, dict):
        raise BadInput("sources: expected {name: detail} or a list of {\"name\": ...} objects")
    grouped: dict[str, dict] = {}
    for key, detail in sources.items():
        if isinstance(detail, dict):
            grouped.setdefault(key, {}).update(detail)
            continue
        name, field = key, "detail"
        flat = key.lower().replace("-", "")
        for known in SOURCE_NOTES:
            prefix = known.replace("-", "")
            if flat.startswith(prefix + "_"):
                name, field = known, flat[len(prefix) + 1:]
        grouped.setdefault(name, {})[field] = str(detail)
    return [{"name": name, **details} for name, details in grouped.items()]


def _source_note(name: str) -> tuple[str | None, str | None]:
    key = name.lower().replace("_", "-")
    for known, (dataset, note) in SOURCE_NOTES.items():
        if known in key or known.replace("-", "") in key:
            return dataset, note
    return None, None


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def render_model_card(*, model_name: str, variant: str, info: dict, metrics: dict | None,
                      sources: list[dict], license_id: str = DEFAULT_LICENSE, jglue_table: str | None = None) -> str:
    """The release's README.md: Hugging Face front matter, then what a user needs to know.
    ``jglue_table``: ``bertja evaluate --jglue``'s jglue.md (the recipe's results table)."""
    datasets = sorted({d for s in sources if (d := _source_note(s["name"])[0])})
    front = ["---", "language: ja", f"license: {license_id}", "library_name: transformers",
             "pipeline_tag: fill-mask", "tags:", "- bert", "- japanese", "- fill-mask"]
    if datasets:
        front += ["datasets:"] + [f"- {d}" for d in datasets]
    front.append("---")
    subword = info["subword_tokenizer_type"]
    tokenizer_desc = ("MeCab word split (fugashi, dictionary `{dic}`), then WordPiece subwords"
                      if subword == "wordpiece" else
                      "MeCab word split (fugashi, dictionary `{dic}`), then single characters"
                      ).format(dic=info["mecab_dic"])
    lines = front + [
        "", f"# {model_name}", "",
        f"A Japanese BERT ({variant}) pretrained with whole-word masking and next-sentence prediction, "
        "following the recipe of Tohoku University's bert-japanese models (TF Model Garden pretraining, "
        "converted to Hugging Face `BertForPreTraining`).", "",
        "## Model", "",
        "| | |", "|---|---|",
        f"| variant | {variant} |",
        f"| layers | {info['num_hidden_layers']} |",
        f"| hidden size | {info['hidden_size']} |",
        f"| attention heads | {info['num_attention_heads']} |",
        f"| intermediate size | {info['intermediate_size']} |",
        f"| max sequence length | {info['max_position_embeddings']} |",
        f"| vocabulary | {info['vocab_size']} ({subword}) |",
        f"| parameters | {info['num_parameters']:,} |",
        f"| activation | {info['hidden_act']} (Model Garden's tanh-approximated GELU) |",
    ]
    if info.get("global_step") is not None:
        lines.append(f"| training steps (last stage) | {info['global_step']:,} |")
    lines += ["", "## Tokenizer", "",
              f"`BertJapaneseTokenizer`: NFKC normalisation, {tokenizer_desc}; "
              f"`do_lower_case={info['do_lower_case']}`. It needs `fugashi` and `unidic-lite` installed.", ""]
    lines += ["## Training data", ""]
    if sources:
        for source in sources:
            details = ", ".join(f"{k}: `{v}`" for k, v in source.items() if k != "name")
            note = _source_note(source["name"])[1]
            lines.append(f"- **{source['name']}**" + (f" ({details})" if details else "") + (f". {note}" if note else ""))
    else:
        lines.append("Not recorded for this release.")
    lines += ["", "## Evaluation", ""]
    metrics = metrics or {}
    # bertja evaluate's metrics.json nests the numbers under "metrics"; a flat dict works too.
    numbers = metrics["metrics"] if isinstance(metrics.get("metrics"), dict) else metrics
    scalar = {k: v for k, v in numbers.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if scalar:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in scalar.items()]
        if metrics.get("eval_data"):
            lines += ["", "Masked-LM figures are on held-out pretraining data: "
                      + ", ".join(f"`{storage.basename(u)}`" for u in metrics["eval_data"]) + "."]
    else:
        lines.append("No evaluation figures were given for this release.")
    fill = metrics.get("fill_mask") or []
    if fill:
        lines += ["", "Fill-mask examples (top answers and probabilities):", ""]
        for item in fill[:5]:
            answers = ", ".join(f"{p['token']} ({p['score']:.3f})" for p in item["predictions"][:3])
            lines.append(f"- {item['sentence']} → {answers}")
    if jglue_table:
        lines += ["", "### JGLUE", "", "Fine-tuned on each task's train set and scored on dev, as the recipe's table:",
                  "", jglue_table.strip()]
    lines += [
        "", "## Usage", "",
        "```bash", "pip install transformers torch fugashi unidic-lite", "```", "",
        "```python",
        "from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline",
        "",
        f'name = "{model_name}"  # or a local copy of this release directory',
        "tokenizer = AutoTokenizer.from_pretrained(name)  # BertJapaneseTokenizer",
        "model = AutoModelForMaskedLM.from_pretrained(name)",
        'fill = pipeline("fill-mask", model=model, tokenizer=tokenizer)',
        'print(fill("東北大学で[MASK]の研究をしています。"))',
        "```", "",
        "## Licence", "",
        f"The model weights are released under `{license_id}`. The training text is not redistributed "
        "here; its own terms are listed under Training data (Wikipedia text is CC BY-SA, CC-100 follows "
        "the Common Crawl terms of use). Check that your use fits them.", "",
    ]
    return "\n".join(lines)


def _copy_hashing(src: str, dst: str) -> dict:
    """Copies one file byte for byte and returns its size and SHA-256 (one read)."""
    digest, size = hashlib.sha256(), 0
    with storage.open_read(src, decompress=False) as fin, storage.open_write(dst, compress=False) as fout:
        while chunk := fin.read(storage.GCS_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            fout.write(chunk)
    return {"size": size, "sha256": digest.hexdigest()}


def _relative_files(model_dir: str) -> list[str]:
    base = model_dir.rstrip("/")
    out = []
    for uri in storage.list_files(model_dir):
        rel = uri[len(base) + 1:] if storage.is_gcs(model_dir) else os.path.relpath(uri, storage.local_path(model_dir))
        rel = rel.replace(os.sep, "/")
        if rel in (MODEL_CARD, MANIFEST) or any(part.startswith(".") for part in rel.split("/")):
            continue
        out.append(rel)
    return out


def publish_model(model_dir: str, release_uri: str, *, metrics: dict | str | None = None,
                  model_name: str | None = None, variant: str | None = None,
                  sources: dict | list | str | None = None, license_id: str = DEFAULT_LICENSE,
                  overwrite: bool = False, jglue_table: str | None = None) -> dict:
    """Copies a converted model to ``release_uri`` with a model card, all or nothing (see module doc).

    ``metrics``: the evaluation's metrics dict or a metrics.json URI. ``sources``: training data,
    ``{name: detail}`` or a JSON URI (e.g. ``{"wikipedia": {"dump_date": "20240801"}}``).
    ``jglue_table``: the JGLUE results table (Markdown) for the card.
    Returns ``{"release_uri", "model_name", "variant", "files", "num_parameters", "manifest"}``.
    """
    storage.check_outputs([model_dir, metrics if isinstance(metrics, str) else None,
                           sources if isinstance(sources, str) else None], dirs=[release_uri])
    info = describe_model(model_dir)
    if isinstance(metrics, str):
        metrics = storage.read_json_object(metrics)
    source_list = _normalise_sources(sources)
    model_name = model_name or default_model_name(info)
    variant = variant or f"{info['size']}, {info['subword_tokenizer_type']}"
    release_uri = release_uri.rstrip("/")
    manifest_uri = storage.join(release_uri, MANIFEST)
    if storage.exists(manifest_uri) and not overwrite:
        raise BadInput(f"{release_uri}: already holds a release ({MANIFEST} exists); pass overwrite to replace it")
    if not storage.is_gcs(release_uri):
        local = storage.local_path(release_uri)
        if os.path.isfile(local):
            raise BadInput(f"{release_uri}: is a file, not a release directory")
        if os.path.isdir(local) and os.listdir(local) and not os.path.exists(os.path.join(local, MANIFEST)):
            raise BadInput(f"{release_uri}: exists, is not empty and holds no release; choose a new location")

    staging = f"{release_uri}.staging-{uuid.uuid4().hex[:12]}"
    files: dict[str, dict] = {}
    try:
        for rel in _relative_files(model_dir):
            files[rel] = _copy_hashing(storage.join(model_dir, rel), storage.join(staging, rel))
        card = render_model_card(model_name=model_name, variant=variant, info=info, metrics=metrics,
                                 sources=source_list, license_id=license_id,
                                 jglue_table=jglue_table).encode("utf-8")
        storage.write_bytes(storage.join(staging, MODEL_CARD), card)
        files[MODEL_CARD] = {"size": len(card), "sha256": hashlib.sha256(card).hexdigest()}
        manifest = {
            "model_name": model_name,
            "variant": variant,
            "source_model_dir": model_dir,
            "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "num_parameters": info["num_parameters"],
            "files": dict(sorted(files.items())),
        }
        manifest_text = json.dumps(manifest, ensure_ascii=False, indent=2) + "\n"
        if storage.is_gcs(release_uri):
            _promote_gcs(staging, release_uri, list(files), manifest_text)
        else:
            storage.write_text(storage.join(staging, MANIFEST), manifest_text)
            _promote_local(staging, release_uri)
    finally:
        _remove_tree(staging)
    return {"release_uri": release_uri, "model_name": model_name, "variant": variant,
            "files": sorted([*files, MANIFEST]), "num_parameters": info["num_parameters"],
            "manifest": manifest_uri}


def _promote_local(staging: str, release_uri: str) -> None:
    release = storage.local_path(release_uri)
    # A release is for everyone to read, whatever the umask of the publishing process.
    for dirpath, _dirs, names in os.walk(storage.local_path(staging)):
        os.chmod(dirpath, 0o755)
        for name in names:
            os.chmod(os.path.join(dirpath, name), 0o644)
    old = None
    if os.path.exists(release):
        old = f"{release}.old-{uuid.uuid4().hex[:12]}"
        os.rename(release, old)
    try:
        os.rename(storage.local_path(staging), release)
    except BaseException:
        if old:  # the previous release goes back where it was
            os.rename(old, release)
        raise
    if old:
        shutil.rmtree(old, ignore_errors=True)


def _promote_gcs(staging: str, release_uri: str, names: list[str], manifest_text: str) -> None:
    manifest_uri = storage.join(release_uri, MANIFEST)
    previous = set(storage.read_json_object(manifest_uri).get("files", {})) if storage.exists(manifest_uri) else set()
    storage.remove(manifest_uri)  # from here until the end, the release reads as incomplete
    for name in names:
        storage.copy(storage.join(staging, name), storage.join(release_uri, name))  # server-side
    for stale in sorted(previous - set(names)):  # files of the replaced release only
        storage.remove(storage.join(release_uri, stale))
    storage.write_text(manifest_uri, manifest_text)


def _remove_tree(uri: str) -> None:
    if storage.is_gcs(uri):
        for f in storage.list_files(uri):
            storage.remove(f)
    else:
        shutil.rmtree(storage.local_path(uri), ignore_errors=True)

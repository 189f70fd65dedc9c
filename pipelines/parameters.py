"""The pipeline's parameters: names, recipe defaults and validation, in one place.

Defaults are the recipe's (seed README / SPEC); profiles (``profiles.py``) override
some of them as data. ``validate`` runs at compile/submit time and again in the
first pipeline step (a run started from the UI skips the CLI), so a bad value fails
before any data moves, with a message naming the parameter. No KFP import here.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from components.errors import BadInput

VARIANTS = ("wordpiece", "character")
MODEL_SIZES = ("tiny", "base", "large")
BACKENDS = ("cpu", "tpu")
# [PAD] [UNK] [CLS] [SEP] [MASK] + [unused0..9] precede the alphabet in the vocab.
NUM_SPECIAL_TOKENS = 5


@dataclass(frozen=True)
class PipelineParameters:
    # --- sources (resolved to concrete, cache-honest values by the first step)
    wikipedia_dump_date: str = "latest"
    cirrus_index_url: str = "https://dumps.wikimedia.org/other/cirrussearch"
    cc100_url: str = "https://data.statmt.org/cc-100/ja.txt.xz"
    unidic_url: str = "https://ccd.ninjal.ac.jp/unidic_archive/cwj/2.1.2/unidic-mecab-2.1.2_src.zip"
    # --- corpora
    mecab_dic: str = "unidic_lite"
    min_sentence_length: int = 10
    max_sentence_length: int = 200
    cc100_num_shards: int = 64
    wikipedia_num_shards: int = 8
    split_seed: int = 0
    tokenizer_sample_lines: int = 10_000_000
    # --- tokenizers
    variants: list = field(default_factory=lambda: list(VARIANTS))
    vocab_size: int = 32768
    limit_alphabet: int = 7012
    num_unused_tokens: int = 10
    min_frequency: int = 2
    do_lower_case: bool = False
    # --- pretraining data (stage 1: CC-100, stage 2: Wikipedia)
    stage1_max_seq_length: int = 128
    stage1_max_predictions: int = 19
    stage1_dupe_factor: int = 5
    stage2_max_seq_length: int = 512
    stage2_max_predictions: int = 76
    stage2_dupe_factor: int = 30
    masked_lm_prob: float = 0.15
    short_seq_prob: float = 0.1
    data_seed: int = 12345
    # --- training
    model_size: str = "base"
    training_backend: str = "tpu"
    stage1_train_steps: int = 0  # 0: the experiment config's own (1M in the recipe)
    stage2_train_steps: int = 0
    gcp_project: str = ""
    gcp_zone: str = "europe-west4-a"
    tpu_accelerator_type: str = "v3-8"
    tpu_runtime_version: str = ""  # empty: the framework-free base runtime for the TPU type
    tpu_spot: bool = False
    tpu_queued: bool = False  # ask through a queued resource (waits for capacity instead of failing)
    tpu_queue_timeout_hours: float = 24.0  # with tpu_queued: how long to wait in the queue for capacity
    tpu_network: str = ""  # empty: the project's default network
    tpu_subnetwork: str = ""
    tpu_service_account: str = ""  # empty: the project's default compute service account
    tpu_price_per_hour: float = 8.0
    # --- release
    release_uri: str = ""  # empty: keep the published model under the pipeline root only
    # --- evaluation: JGLUE's repository (gs:// or local directory) or an archive of it; empty: none
    jglue_uri: str = ""
    jglue_grid: str = "jglue"  # JGLUE's lr x epochs grid, or "quick" (one point) for small runs
    jglue_seeds: int = 1

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = {f.name for f in dataclasses.fields(PipelineParameters)}
_DATE = re.compile(r"^(latest|\d{8})$")
_GCS_ROOT = re.compile(r"^gs://[a-z0-9][a-z0-9._-]{1,61}[a-z0-9](/[^\s]*)?$")


def merged(overrides: dict | None = None, base: dict | None = None) -> dict:
    """Recipe defaults, then ``base`` (a profile), then ``overrides``; unknown names fail."""
    values = PipelineParameters().as_dict()
    for source in (base or {}, overrides or {}):
        for k, v in source.items():
            if k not in FIELDS:
                raise BadInput(f"unknown pipeline parameter {k!r}; known: {', '.join(sorted(FIELDS))}")
            values[k] = v
    return values


def coerce(name: str, text: str):
    """Parses a ``key=value`` string from the command line to the parameter's type."""
    default = getattr(PipelineParameters(), name) if name in FIELDS else None
    if name not in FIELDS:
        raise BadInput(f"unknown pipeline parameter {name!r}; known: {', '.join(sorted(FIELDS))}")
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, list):
            return [x.strip() for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise BadInput(f"parameter {name}={text!r}: expected {type(default).__name__}") from e
    return text


def validate(values: dict, for_run: bool = True) -> dict:
    """Checks every value a user can get wrong; raises BadInput naming the parameter.

    ``for_run=False`` (compiling) skips what a run must fill in but a compiled
    pipeline may leave for the UI form, such as ``gcp_project``.
    """
    def need(cond: bool, name: str, msg: str):
        if not cond:
            raise BadInput(f"parameter {name}={values.get(name)!r}: {msg}")

    for name in ("cc100_num_shards", "wikipedia_num_shards", "tokenizer_sample_lines",
                 "stage1_dupe_factor", "stage2_dupe_factor", "min_frequency"):
        if name in values:
            need(int(values[name]) >= 1, name, "must be a positive integer")
    if "wikipedia_dump_date" in values:
        need(bool(_DATE.match(str(values["wikipedia_dump_date"]))), "wikipedia_dump_date",
             "must be 'latest' or a date YYYYMMDD")
    if "variants" in values:
        vs = values["variants"]
        need(isinstance(vs, (list, tuple)) and len(vs) > 0 and all(v in VARIANTS for v in vs), "variants",
             f"must be a non-empty list of {VARIANTS}")
        need(len(set(vs)) == len(vs), "variants", "lists a variant twice")
    if "model_size" in values:
        need(values["model_size"] in MODEL_SIZES, "model_size", f"must be one of {MODEL_SIZES}")
    if "training_backend" in values:
        need(values["training_backend"] in BACKENDS, "training_backend", f"must be one of {BACKENDS}")
    if {"vocab_size", "limit_alphabet", "num_unused_tokens"} <= values.keys():
        floor = NUM_SPECIAL_TOKENS + int(values["num_unused_tokens"]) + int(values["limit_alphabet"])
        need(int(values["vocab_size"]) >= floor, "vocab_size",
             f"smaller than the special tokens plus the alphabet ({floor})")
    if {"min_sentence_length", "max_sentence_length"} <= values.keys():
        need(0 <= int(values["min_sentence_length"]) <= int(values["max_sentence_length"]),
             "max_sentence_length", "must be >= min_sentence_length >= 0")
    for stage in (1, 2):
        seq, pred = f"stage{stage}_max_seq_length", f"stage{stage}_max_predictions"
        if seq in values:
            need(8 <= int(values[seq]) <= 512, seq, "must be between 8 and 512")
        if pred in values and seq in values:
            need(1 <= int(values[pred]) < int(values[seq]), pred, "must be >= 1 and below the sequence length")
    if "tpu_queue_timeout_hours" in values:
        need(float(values["tpu_queue_timeout_hours"]) > 0, "tpu_queue_timeout_hours", "must be a number of hours > 0")
    if "masked_lm_prob" in values:
        need(0 < float(values["masked_lm_prob"]) < 1, "masked_lm_prob", "must be in (0, 1)")
    if values.get("training_backend") == "tpu":
        if for_run:
            need(bool(values.get("gcp_project")), "gcp_project", "is required when training_backend='tpu'")
        _check_tpu(values)
    if values.get("release_uri"):
        check_uri("release_uri", values["release_uri"])
    if values.get("jglue_uri"):
        need("://" not in values["jglue_uri"] or values["jglue_uri"].startswith(("https://", "http://", "gs://", "file://")),
             "jglue_uri", "must be empty (no JGLUE), or JGLUE's directory or an archive of it (https, gs, file or a path)")
        check_uri("jglue_uri", values["jglue_uri"])
    if "jglue_grid" in values:
        need(values["jglue_grid"] in _jglue_grids(), "jglue_grid", "must be 'jglue' (JGLUE's grid) or 'quick'")
    if "jglue_seeds" in values:
        need(int(values["jglue_seeds"]) >= 1, "jglue_seeds", "must be a positive integer")
    return values


def _jglue_grids():
    from components.evaluate.jglue import GRIDS  # deferred: evaluation code only when checked

    return GRIDS


def _check_tpu(values: dict) -> None:
    """TPU settings, with the TPU controller's own rules (before any data moves)."""
    from components.tpu import control

    checks = [("gcp_zone", lambda v: control.check_zone(v)),
              ("tpu_accelerator_type", lambda v: control.parse_accelerator(v))]
    if values.get("tpu_runtime_version"):
        checks.append(("tpu_runtime_version",
                       lambda v: control.check_runtime_version(v, values.get("tpu_accelerator_type", "v3-8"))))
    if values.get("gcp_project"):
        checks.append(("gcp_project", lambda v: control.check_project(v)))
    for name, check in checks:
        if name in values:
            try:
                check(values[name])
            except BadInput as e:
                raise BadInput(f"parameter {name}={values[name]!r}: {e}") from e


def variant_selected(variants, variant: str) -> bool:
    """``variants`` may arrive as a list or, from some front ends, as a comma-separated string."""
    if isinstance(variants, str):
        variants = [v.strip() for v in variants.split(",")]
    return variant in variants


def check_pipeline_root(root: str) -> str:
    """A pipeline root must be a well-formed gs:// URI, or a local directory for kfp.local."""
    if root.startswith("gs://"):
        if not _GCS_ROOT.match(root):
            raise BadInput(f"pipeline_root={root!r}: malformed gs:// URI (expected gs://BUCKET[/PATH])")
    elif "://" in root and not root.startswith(("minio://", "s3://", "file://")):
        raise BadInput(f"pipeline_root={root!r}: expected gs://BUCKET/PATH (or minio:// on kind)")
    return root


def check_uri(name: str, uri: str) -> str:
    if uri.startswith("gs://") and not _GCS_ROOT.match(uri):
        raise BadInput(f"parameter {name}={uri!r}: malformed gs:// URI (expected gs://BUCKET/PATH)")
    return uri

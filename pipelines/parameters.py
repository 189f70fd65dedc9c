"""The pipeline's parameters: names, recipe defaults and validation, in one place.

Defaults are the recipe's (seed README / SPEC); profiles (``profiles.py``) override
some of them as data. ``validate`` runs at compile/submit time and again in the
first pipeline step (a run started from the UI skips the CLI), so a bad value fails
before any data moves, with a message naming the parameter. No KFP import here.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from dataclasses import dataclass, field
from urllib.parse import urlparse

from components.errors import BadInput
from components.mecab import MECAB_DIC_CHOICES, VIBRATO_DICT_SUFFIXES

VARIANTS = ("wordpiece", "character", "sentencepiece", "byte")  # a variant names its tokenizer type
MECAB_VARIANTS = ("wordpiece", "character")  # built from the MeCab + WordPiece tokenizer
SP_MODEL_TYPES = ("unigram", "bpe")
SP_NORMALIZATIONS = ("nmt_nfkc", "nfkc", "nmt_nfkc_cf", "nfkc_cf", "identity")
DATA_FORMATS = ("tfrecord", "shards")  # Model Garden TFRecords (masked), or token shards (PyTorch trainer)
TRAINERS = ("model-garden", "torch")
# Which variants each trainer builds (the DAG lays out exactly these).
TRAINER_VARIANTS = {"model-garden": ("wordpiece", "character", "sentencepiece"), "torch": ("sentencepiece", "byte")}
STAGE1_CORPORA = ("cc100", "wikipedia", "none")  # none: one stage (stage 2's settings, Wikipedia)
# What splits words for the byte variant's whole-word masking: MeCab (``mecab_dic``) or vibrato
# (``vibrato_dict_url``, downloaded only then). The MeCab variants always use MeCab.
WORD_SPLITTERS = ("mecab", "vibrato")
BYTE_VOCAB = 256
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
    vibrato_dict_url: str = ""  # word_splitter=vibrato: a vibrato system dictionary (.dic or .dic.zst)
    # --- corpora
    mecab_dic: str = "unidic_lite"
    word_splitter: str = "mecab"
    min_sentence_length: int = 10
    max_sentence_length: int = 200
    cc100_num_shards: int = 64
    wikipedia_num_shards: int = 8
    split_seed: int = 0
    tokenizer_sample_lines: int = 10_000_000
    # --- tokenizers
    variants: list = field(default_factory=lambda: list(MECAB_VARIANTS))
    vocab_size: int = 32768
    limit_alphabet: int = 7012
    num_unused_tokens: int = 10
    min_frequency: int = 2
    do_lower_case: bool = False
    character_vocab_size: int = 0  # 0: specials + unused + alphabet (7027 in the recipe)
    # SentencePiece (the sentencepiece variant; presets in pipelines/recipes.py set them)
    sp_model_type: str = "unigram"
    sp_character_coverage: float = 0.9995
    sp_byte_fallback: bool = False
    sp_split_digits: bool = False
    sp_control_symbols: list = field(default_factory=lambda: ["[PAD]", "[CLS]", "[SEP]", "[MASK]"])
    sp_user_symbols: list = field(default_factory=list)
    sp_normalization: str = "nmt_nfkc"
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
    whole_word_masking: bool = True
    next_sentence_prediction: bool = True
    data_format: str = "tfrecord"
    stage1_corpus: str = "cc100"
    # --- training
    trainer: str = "model-garden"
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
    # --- the PyTorch trainer (trainer='torch'): a plan of components/torch_train/configs.py (the
    # recipe's), its model shape and per-stage overrides; empty/0 = the plan's own
    torch_plan: str = ""
    torch_architecture: str = ""  # an architecture name, or "tiny": the plan's family at its tiny shape
    torch_seq_lengths: list = field(default_factory=list)  # one value for every stage, or one per stage
    torch_train_steps: list = field(default_factory=list)
    torch_global_batch_size: int = 0
    torch_micro_batch_size: int = 8  # per process; the rest of the global batch is gradient accumulation
    # --- release
    release_uri: str = ""  # empty: keep the published model under the pipeline root only
    # --- evaluation: JGLUE's repository (gs:// or local directory) or an archive of it; empty: none
    jglue_uri: str = ""
    jglue_grid: str = "jglue"  # JGLUE's lr x epochs grid, or "quick" (one point) for small runs
    jglue_seeds: int = 1

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = {f.name for f in dataclasses.fields(PipelineParameters)}
INT_LISTS = ("torch_seq_lengths", "torch_train_steps")  # list parameters of whole numbers
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
            items = [x.strip() for x in text.split(",") if x.strip()]
            return [int(x) for x in items] if name in INT_LISTS else items
    except ValueError as e:
        raise BadInput(f"parameter {name}={text!r}: expected {type(default).__name__}") from e
    return text


def _integer(v) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _at_least(low: int):
    return lambda v: _integer(v) and v >= low


def _symbols(v) -> bool:
    return isinstance(v, (list, tuple)) and all(isinstance(x, str) and x and not any(c.isspace() for c in x)
                                                for x in v) and len(set(v)) == len(v)


def _source_url(v) -> bool:
    """Where a download step can read from: http(s), gs, file or package URIs, or an absolute path."""
    if not isinstance(v, str) or not v.strip() or v != v.strip():
        return False
    if v.startswith("/"):
        return True
    parsed = urlparse(v)
    return parsed.scheme in SOURCE_SCHEMES and bool(parsed.netloc or parsed.path.strip("/"))


def _dump_date(v) -> bool:
    if not isinstance(v, str) or not _DATE.match(v):
        return False
    if v == "latest":
        return True
    try:
        datetime.datetime.strptime(v, "%Y%m%d")
    except ValueError:
        return False
    return True


def _tpu_check(check):
    """A TPU controller check as a rule: its own message says what is wrong."""
    def rule(v):
        if not isinstance(v, str):
            return False
        check(v)
        return True
    return rule


def _torch_configs():
    from components.torch_train import configs  # no torch import: the tables only

    return configs


def _whole_numbers(low: int, high: int | None = None):
    return lambda v: isinstance(v, (list, tuple)) and all(_integer(x) and x >= low and (high is None or x <= high)
                                                          for x in v)


def _jglue_grids():
    from components.evaluate.jglue import GRIDS  # deferred like _control

    return GRIDS


def _control():
    from components.tpu import control  # deferred: the TPU client is imported only when needed

    return control


SOURCE_SCHEMES = ("https", "http", "gs", "file", "package")
_URL_RULE = f"must be a URL ({', '.join(s + '://' for s in SOURCE_SCHEMES)}) or an absolute path"
_NETWORK = re.compile(r"^((https://www\.googleapis\.com/compute/v1/)?projects/[a-z0-9:.-]+/"
                      r"(global|regions/[a-z0-9-]+)/(networks|subnetworks)/)?[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

# name -> (rule, what it must be). Every parameter has one (tests/test_bad_input.py checks).
RULES: dict = {
    "wikipedia_dump_date": (_dump_date, "must be 'latest' or a real date YYYYMMDD"),
    "cirrus_index_url": (_source_url, _URL_RULE),
    "cc100_url": (_source_url, _URL_RULE),
    "unidic_url": (_source_url, _URL_RULE),
    "vibrato_dict_url": (lambda v: v == "" or (_source_url(v) and v.endswith(VIBRATO_DICT_SUFFIXES)),
                         f"must be empty or a vibrato system dictionary ({' or '.join(VIBRATO_DICT_SUFFIXES)}) at a "
                         + _URL_RULE.removeprefix("must be a ")),
    "mecab_dic": (lambda v: v in MECAB_DIC_CHOICES, f"must be one of {MECAB_DIC_CHOICES}"),
    "word_splitter": (lambda v: v in WORD_SPLITTERS, f"must be one of {WORD_SPLITTERS}"),
    "min_sentence_length": (_at_least(0), "must be an integer >= 0"),
    "max_sentence_length": (_at_least(1), "must be a positive integer"),
    "cc100_num_shards": (_at_least(1), "must be a positive integer"),
    "wikipedia_num_shards": (_at_least(1), "must be a positive integer"),
    "split_seed": (_at_least(0), "must be an integer >= 0"),
    "tokenizer_sample_lines": (_at_least(1), "must be a positive integer"),
    "variants": (lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(x in VARIANTS for x in v)
                 and len(set(v)) == len(v), f"must be a non-empty list of {VARIANTS}, each once"),
    "vocab_size": (_at_least(1), "must be a positive integer"),
    "limit_alphabet": (_at_least(1), "must be a positive integer"),
    "num_unused_tokens": (_at_least(0), "must be an integer >= 0"),
    "min_frequency": (_at_least(1), "must be a positive integer"),
    "do_lower_case": (lambda v: isinstance(v, bool), "must be true or false"),
    "character_vocab_size": (_at_least(0), "must be an integer >= 0 (0: specials + unused + alphabet)"),
    "sp_model_type": (lambda v: v in SP_MODEL_TYPES, f"must be one of {SP_MODEL_TYPES}"),
    "sp_character_coverage": (lambda v: _number(v) and 0 < v <= 1, "must be in (0, 1]"),
    "sp_byte_fallback": (lambda v: isinstance(v, bool), "must be true or false"),
    "sp_split_digits": (lambda v: isinstance(v, bool), "must be true or false"),
    "sp_control_symbols": (_symbols, "must be a list of distinct symbols without spaces"),
    "sp_user_symbols": (_symbols, "must be a list of distinct symbols without spaces"),
    "sp_normalization": (lambda v: v in SP_NORMALIZATIONS, f"must be one of {SP_NORMALIZATIONS}"),
    "stage1_max_seq_length": (lambda v: _integer(v) and 8 <= v <= 512, "must be between 8 and 512"),
    "stage1_max_predictions": (_at_least(1), "must be a positive integer"),
    "stage1_dupe_factor": (_at_least(1), "must be a positive integer"),
    "stage2_max_seq_length": (lambda v: _integer(v) and 8 <= v <= 512, "must be between 8 and 512"),
    "stage2_max_predictions": (_at_least(1), "must be a positive integer"),
    "stage2_dupe_factor": (_at_least(1), "must be a positive integer"),
    "masked_lm_prob": (lambda v: _number(v) and 0 < v < 1, "must be in (0, 1)"),
    "short_seq_prob": (lambda v: _number(v) and 0 <= v <= 1, "must be in [0, 1]"),
    "data_seed": (_at_least(0), "must be an integer >= 0"),
    "whole_word_masking": (lambda v: isinstance(v, bool), "must be true or false"),
    "next_sentence_prediction": (lambda v: isinstance(v, bool), "must be true or false"),
    "data_format": (lambda v: v in DATA_FORMATS, f"must be one of {DATA_FORMATS}"),
    "stage1_corpus": (lambda v: v in STAGE1_CORPORA, f"must be one of {STAGE1_CORPORA}"),
    "trainer": (lambda v: v in TRAINERS, f"must be one of {TRAINERS}"),
    "model_size": (lambda v: v in MODEL_SIZES, f"must be one of {MODEL_SIZES}"),
    "training_backend": (lambda v: v in BACKENDS, f"must be one of {BACKENDS}"),
    "stage1_train_steps": (_at_least(0), "must be an integer >= 0 (0: the experiment's own)"),
    "stage2_train_steps": (_at_least(0), "must be an integer >= 0 (0: the experiment's own)"),
    "gcp_project": (lambda v: isinstance(v, str) and (not v or _tpu_check(_control().check_project)(v)),
                    "must be a Google Cloud project ID or empty"),
    "gcp_zone": (lambda v: _tpu_check(_control().check_zone)(v), "must be a zone name"),
    "tpu_accelerator_type": (lambda v: _tpu_check(_control().parse_accelerator)(v), "must be a TPU type"),
    "tpu_runtime_version": (lambda v: isinstance(v, str), "must be a TPU runtime version or empty"),
    "tpu_spot": (lambda v: isinstance(v, bool), "must be true or false"),
    "tpu_queued": (lambda v: isinstance(v, bool), "must be true or false"),
    "tpu_queue_timeout_hours": (lambda v: _number(v) and v > 0, "must be a number of hours > 0"),
    "tpu_network": (lambda v: isinstance(v, str) and (not v or bool(_NETWORK.match(v))),
                    "must be a network name or projects/P/global/networks/N, or empty"),
    "tpu_subnetwork": (lambda v: isinstance(v, str) and (not v or bool(_NETWORK.match(v))),
                       "must be a subnetwork name or projects/P/regions/R/subnetworks/N, or empty"),
    "tpu_service_account": (lambda v: isinstance(v, str) and (not v or bool(_EMAIL.match(v))),
                            "must be a service account email or empty"),
    "tpu_price_per_hour": (lambda v: _number(v) and v >= 0, "must be a number >= 0"),
    "torch_plan": (lambda v: v == "" or v in _torch_configs().PLANS,
                   "must be empty (trainer='model-garden') or a PyTorch-trainer plan: modernbert-ja, rinna-roberta, "
                   "bybert, bert"),
    "torch_architecture": (lambda v: v in ("", "tiny") or v in _torch_configs().ARCHITECTURES,
                           "must be empty (the plan's), 'tiny' (the plan's family, tiny) or an architecture of "
                           "components/torch_train/configs.py"),
    "torch_seq_lengths": (_whole_numbers(8, 8192), "must be a list of sequence lengths between 8 and 8192 "
                          "(empty: the plan's)"),
    "torch_train_steps": (_whole_numbers(1), "must be a list of positive step counts (empty: the plan's)"),
    "torch_global_batch_size": (_at_least(0), "must be an integer >= 0 (0: the plan's)"),
    "torch_micro_batch_size": (_at_least(1), "must be a positive integer"),
    "jglue_uri": (lambda v: v == "" or _source_url(v), "must be empty (no JGLUE), or JGLUE's directory or an "
                  "archive of it: " + _URL_RULE),
    "jglue_grid": (lambda v: v in _jglue_grids(), "must be 'jglue' (JGLUE's grid) or 'quick'"),
    "jglue_seeds": (_at_least(1), "must be a positive integer"),
    "release_uri": (lambda v: isinstance(v, str) and (bool(_GCS_ROOT.match(v)) or not v.startswith("gs://"))
                    and ("://" not in v or v.startswith(("gs://", "file://"))),
                    "must be gs://BUCKET/PATH, a local path or empty"),
}


def validate(values: dict, for_run: bool = True) -> dict:
    """Checks every parameter in ``values`` (its own rule, then the rules between them);
    raises BadInput naming the parameter. The CLI and the run's first step both call this.

    ``for_run=False`` (compiling) skips what a run must fill in but a compiled
    pipeline may leave for the UI form, such as ``gcp_project``.
    """
    def need(cond: bool, name: str, msg: str):
        if not cond:
            raise BadInput(f"parameter {name}={values.get(name)!r}: {msg}")

    for name, value in values.items():
        if name not in RULES:
            raise BadInput(f"unknown pipeline parameter {name!r}; known: {', '.join(sorted(FIELDS))}")
        rule, what = RULES[name]
        try:
            ok = rule(value)
        except BadInput as e:  # a controller check's own message
            raise BadInput(f"parameter {name}={value!r}: {e}") from e
        except (TypeError, ValueError):
            ok = False
        need(ok, name, what)
    if {"vocab_size", "limit_alphabet", "num_unused_tokens"} <= values.keys():
        floor = NUM_SPECIAL_TOKENS + int(values["num_unused_tokens"]) + int(values["limit_alphabet"])
        need(int(values["vocab_size"]) >= floor, "vocab_size",
             f"smaller than the special tokens plus the alphabet ({floor})")
    _check_recipe_rules(values, need)
    if {"min_sentence_length", "max_sentence_length"} <= values.keys():
        need(int(values["min_sentence_length"]) <= int(values["max_sentence_length"]),
             "max_sentence_length", "must be >= min_sentence_length >= 0")
    for stage in (1, 2):
        seq, pred = f"stage{stage}_max_seq_length", f"stage{stage}_max_predictions"
        if pred in values and seq in values:
            need(int(values[pred]) < int(values[seq]), pred, "must be >= 1 and below the sequence length")
    if values.get("tpu_runtime_version") and "tpu_accelerator_type" in values:
        try:
            _control().check_runtime_version(values["tpu_runtime_version"], values["tpu_accelerator_type"])
        except BadInput as e:
            raise BadInput(f"parameter tpu_runtime_version={values['tpu_runtime_version']!r}: {e}") from e
    if values.get("training_backend") == "tpu" and for_run:
        need(bool(values.get("gcp_project")), "gcp_project", "is required when training_backend='tpu'")
    return values


def _check_recipe_rules(values: dict, need) -> None:
    """Rules between the recipe parameters (issue 12): what a trainer reads, what masking needs."""
    get = values.get
    variants = get("variants") or []
    if "trainer" in values and "data_format" in values:
        fmt = "tfrecord" if get("trainer") == "model-garden" else "shards"
        need(get("data_format") == fmt, "data_format", f"trainer={get('trainer')!r} reads {fmt!r}")
    if get("trainer") in TRAINER_VARIANTS:
        need(set(variants) <= set(TRAINER_VARIANTS[get("trainer")]), "variants",
             f"trainer={get('trainer')!r} trains {TRAINER_VARIANTS[get('trainer')]}")
    if get("trainer") == "torch":
        need(get("stage1_corpus") == "cc100", "stage1_corpus",
             "trainer='torch' takes shards of CC-100 and Wikipedia ('cc100'); its stages are its own")
        if "torch_plan" in values:
            need(bool(get("torch_plan")), "torch_plan", "trainer='torch' needs a plan (a --recipe sets it)")
    if get("torch_plan"):
        _check_torch_plan(values, need)
    if get("mecab_dic") == "none" and get("whole_word_masking") is True and get("word_splitter") != "vibrato":
        need(False, "whole_word_masking", "needs words: mecab_dic='none' splits none (mask single tokens)")
    if get("word_splitter") == "vibrato":
        need(bool(get("vibrato_dict_url")), "vibrato_dict_url", "word_splitter='vibrato' needs its dictionary")
        need("byte" in variants, "word_splitter", "vibrato splits words for the byte variant only")
    elif get("vibrato_dict_url") and "word_splitter" in values:
        need(False, "vibrato_dict_url", f"given, but word_splitter={get('word_splitter')!r}: set word_splitter=vibrato")
    if get("data_format") == "shards" and get("next_sentence_prediction") is True:
        need(False, "next_sentence_prediction", "token shards are for MLM-only training (no sentence pairs)")
    if get("mecab_dic") == "none":
        need(not set(variants) & set(MECAB_VARIANTS), "mecab_dic",
             f"the {'/'.join(MECAB_VARIANTS)} variants split words with MeCab: choose a dictionary")
    if "sentencepiece" in variants and get("sp_byte_fallback") and "vocab_size" in values:
        floor = BYTE_VOCAB + len(get("sp_control_symbols") or []) + len(get("sp_user_symbols") or []) + 1
        need(int(values["vocab_size"]) >= floor, "vocab_size",
             f"sp_byte_fallback needs 256 byte pieces + specials + <unk> ({floor})")
    if "character" in variants and get("character_vocab_size") and "vocab_size" in values:
        need(int(values["character_vocab_size"]) <= int(values["vocab_size"]), "character_vocab_size",
             "the character vocab is the head of the WordPiece vocab: at most vocab_size")


def _check_torch_plan(values: dict, need) -> None:
    """The plan's stages with the run's overrides: the trainer's own checks, as parameter errors."""
    from components.torch_train.step import per_stage, resolve_architecture

    configs = _torch_configs()
    get = values.get
    stages = len(configs.plan(get("torch_plan")).stages)
    for name in INT_LISTS:
        need(len(get(name) or []) in (0, 1, stages), name, f"plan {get('torch_plan')} has {stages} stage(s): give "
             f"one value per stage, one for all, or none")
    try:
        plan = configs.plan_stages(get("torch_plan"), seq_lengths=per_stage(get("torch_seq_lengths")),
                                   train_steps=per_stage(get("torch_train_steps")),
                                   global_batch_size=get("torch_global_batch_size") or None)
    except BadInput as e:
        need(False, "torch_plan", str(e))
    arch = configs.architecture(resolve_architecture(get("torch_plan"), get("torch_architecture") or ""))
    for i, st in enumerate(plan, 1):
        need(st.seq_length <= arch.max_length, "torch_seq_lengths",
             f"stage {i}: {st.seq_length} exceeds {arch.name}'s maximum of {arch.max_length}")
    batch, micro = get("torch_global_batch_size") or 0, get("torch_micro_batch_size")
    if micro:
        sizes = [batch] if batch else [st.global_batch_size for st in plan]
        need(all(int(b) % int(micro) == 0 for b in sizes), "torch_micro_batch_size",
             f"must divide the global batch ({', '.join(str(b) for b in sizes)})")


def builds(variants, among, trainer: str, trainers) -> bool:
    """Whether a run with these ``variants`` and ``trainer`` builds one of ``among`` with one of ``trainers``."""
    return trainer in trainers and any(variant_selected(variants, v) for v in among)


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


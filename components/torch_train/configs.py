"""What the PyTorch trainer can build and how it trains it: two tables.

``ARCHITECTURES``: a model shape per name, built from a ``transformers`` config (never a hub
download). ``PLANS``: a recipe's stages (sequence length, packing, masking rate), each stage
starting from the weights of the one before. Tests and the local profile use the ``*-tiny``
shapes and shorter lengths (``plan_stages(..., seq_lengths=...)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from components.errors import BadInput
from components.tokenizer import files as tokenizer_files

FAMILIES = {
    # family: (config class, masked-LM class) in transformers 5.23
    "modernbert": ("ModernBertConfig", "ModernBertForMaskedLM"),
    "roberta": ("RobertaConfig", "RobertaForMaskedLM"),
    # The closest Llama-style encoder in transformers (SwiGLU, RoPE, GQA, bidirectional);
    # there is no LlamaForMaskedLM.
    "eurobert": ("EuroBertConfig", "EuroBertForMaskedLM"),
    "bert": ("BertConfig", "BertForMaskedLM"),
}
PACKINGS = ("naive", "best-fit", "none")
SCHEDULES = ("wsd", "linear")


@dataclass(frozen=True)
class Architecture:
    name: str
    family: str
    config: dict  # transformers config keyword arguments (vocabulary and specials are added at build time)
    max_length: int  # the longest sequence this shape takes (RoPE context / position table)


def _modernbert(layers: int, hidden: int, heads: int, intermediate: int, local_attention: int) -> dict:
    # Global attention every third layer, local (sliding window) in between, as ModernBERT does.
    # sparse_prediction: in training the head runs on masked tokens only (at 8192 tokens x 102,400
    # pieces the full logits alone are 3.2 GiB in fp32); inference (fill-mask) is unaffected.
    return {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
            "intermediate_size": intermediate, "local_attention": local_attention,
            "layer_types": ["full_attention" if i % 3 == 0 else "sliding_attention" for i in range(layers)],
            "max_position_embeddings": 8192, "sparse_prediction": True}


ARCHITECTURES = {a.name: a for a in (
    # sbintuitions/modernbert-ja-130m: 19 layers, hidden 512, 8 heads, GLU 2048, local window 128.
    Architecture("modernbert-130m", "modernbert", _modernbert(19, 512, 8, 2048, 128), 8192),
    Architecture("modernbert-tiny", "modernbert", _modernbert(3, 64, 2, 128, 16), 8192),
    # rinna/japanese-roberta-base: 12 x 768.
    Architecture("roberta-base", "roberta", {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                                             "intermediate_size": 3072}, 512),
    Architecture("roberta-tiny", "roberta", {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                                             "intermediate_size": 128}, 512),
    # bybert: a Llama-style encoder, GQA with 4 key/value heads for 12 query heads.
    Architecture("eurobert-base", "eurobert", {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                                               "num_key_value_heads": 4, "intermediate_size": 3072,
                                               "max_position_embeddings": 8192}, 8192),
    Architecture("eurobert-tiny", "eurobert", {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                                               "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 128,
                                               "max_position_embeddings": 8192}, 8192),
    Architecture("bert-base", "bert", {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                                       "intermediate_size": 3072, "max_position_embeddings": 512}, 512),
    Architecture("bert-tiny", "bert", {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                                       "intermediate_size": 128, "max_position_embeddings": 512}, 512),
)}


@dataclass(frozen=True)
class Stage:
    seq_length: int
    packing: str  # "naive" | "best-fit" | "none"
    mask_rate: float
    train_steps: int
    learning_rate: float
    global_batch_size: int
    warmup_steps: int = 0
    schedule: str = "wsd"  # warmup-stable-decay; "linear": warmup then linear decay to 0
    decay_fraction: float = 0.1  # wsd: the last fraction of steps decays linearly to 0
    whole_word_masking: bool = True
    weight_decay: float = 0.01


@dataclass(frozen=True)
class Plan:
    name: str
    architecture: str
    stages: tuple[Stage, ...]
    description: str = ""
    extra: dict = field(default_factory=dict)


PLANS = {p.name: p for p in (
    Plan("modernbert-ja", "modernbert-130m", (
        Stage(1024, "naive", 0.30, 100_000, 8e-4, 512, warmup_steps=2000),
        Stage(8192, "best-fit", 0.30, 10_000, 3e-4, 64, warmup_steps=200),
        Stage(8192, "none", 0.15, 10_000, 3e-4, 64, warmup_steps=200),
    ), "sbintuitions/modernbert-ja-130m: 1024 naive-packed at 30%, then 8192 best-fit packed at 30%, "
       "then 8192 unpacked at 15% (80-10-10 throughout)"),
    Plan("rinna-roberta", "roberta-base", (
        Stage(512, "naive", 0.15, 100_000, 6e-4, 2048, warmup_steps=10_000, schedule="linear"),
    ), "rinna/japanese-roberta-base: RoBERTa-base, MLM only, 512 tokens"),
    Plan("bybert", "eurobert-base", (
        Stage(1024, "best-fit", 0.15, 100_000, 5e-4, 256, warmup_steps=2000),
    ), "bybert: byte-level Llama-style encoder, whole-word masking, one stage"),
    Plan("bert", "bert-base", (
        Stage(128, "naive", 0.15, 900_000, 1e-4, 256, warmup_steps=10_000, schedule="linear"),
        Stage(512, "naive", 0.15, 100_000, 1e-4, 256, warmup_steps=1000, schedule="linear"),
    ), "BERT-base MLM (no NSP), 128 then 512 tokens"),
)}


def architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise BadInput(f"--architecture {name!r}: choose from {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def plan(name: str) -> Plan:
    if name not in PLANS:
        raise BadInput(f"--plan {name!r}: choose from {', '.join(PLANS)}")
    return PLANS[name]


def plan_stages(plan_name: str, *, seq_lengths=None, train_steps=None, global_batch_size=None,
                learning_rate=None, warmup_steps=None) -> tuple[Stage, ...]:
    """The plan's stages with the run's overrides: a list (one value per stage) or one value for all.
    Fewer ``train_steps`` without ``warmup_steps`` keep the plan's warmup fraction."""
    stages = list(plan(plan_name).stages)
    for name, values in (("seq_length", seq_lengths), ("train_steps", train_steps),
                         ("global_batch_size", global_batch_size), ("learning_rate", learning_rate),
                         ("warmup_steps", warmup_steps)):
        if values is None:
            continue
        values = list(values) if isinstance(values, (list, tuple)) else [values] * len(stages)
        values = [_as(type(getattr(stages[0], name)), v, name) for v in values]  # KFP lists bring ints as floats
        if len(values) != len(stages):
            raise BadInput(f"--{name.replace('_', '-')} {values}: plan {plan_name} has {len(stages)} stage(s), "
                           f"give {len(stages)} value(s) or one")
        if name == "train_steps" and warmup_steps is None:  # keep the plan's warmup fraction
            stages = [replace(s, warmup_steps=round(s.warmup_steps * v / s.train_steps)) for s, v in zip(stages, values)]
        stages = [replace(s, **{name: v}) for s, v in zip(stages, values)]
    for i, s in enumerate(stages, 1):
        check_stage(s, f"plan {plan_name} stage {i}")
    return tuple(stages)


def _as(kind, value, name: str):
    if kind is int:
        if float(value) != int(float(value)):
            raise BadInput(f"--{name.replace('_', '-')} {value}: must be a whole number")
        return int(float(value))
    return kind(value)


def check_stage(s: Stage, where: str) -> None:
    if s.packing not in PACKINGS:
        raise BadInput(f"{where}: packing {s.packing!r} not one of {PACKINGS}")
    if s.schedule not in SCHEDULES:
        raise BadInput(f"{where}: schedule {s.schedule!r} not one of {SCHEDULES}")
    if not 0 < s.mask_rate < 1:
        raise BadInput(f"{where}: mask_rate {s.mask_rate} must be in (0, 1)")
    for name in ("seq_length", "train_steps", "global_batch_size"):
        if getattr(s, name) < (8 if name == "seq_length" else 1):
            raise BadInput(f"{where}: {name} {getattr(s, name)} is too small")
    if not 0 <= s.warmup_steps <= s.train_steps:
        raise BadInput(f"{where}: warmup_steps {s.warmup_steps} must be within train_steps {s.train_steps}")
    if s.learning_rate <= 0:
        raise BadInput(f"{where}: learning_rate {s.learning_rate} must be > 0")


def check_length(arch: Architecture, seq_length: int, where: str) -> None:
    """A sequence length the architecture cannot take is refused before anything is built."""
    if seq_length > arch.max_length:
        raise BadInput(f"{where}: sequence length {seq_length} exceeds {arch.name}'s maximum of {arch.max_length}")


def model_config(arch: Architecture, *, vocab_size: int, max_length: int):
    """The transformers config of ``arch`` for this vocabulary (specials at the ids every tokenizer here uses)."""
    import transformers

    check_length(arch, max_length, f"architecture {arch.name}")
    config_class = getattr(transformers, FAMILIES[arch.family][0])
    ids = {"pad_token_id": tokenizer_files.PAD_ID, "bos_token_id": tokenizer_files.CLS_ID,
           "eos_token_id": tokenizer_files.SEP_ID}
    kwargs = dict(arch.config)
    if arch.family == "modernbert":
        ids.update(cls_token_id=tokenizer_files.CLS_ID, sep_token_id=tokenizer_files.SEP_ID)
    elif arch.family == "eurobert":
        ids.update(mask_token_id=tokenizer_files.MASK_ID)
    elif arch.family == "roberta":
        # RoBERTa's positions start at pad + 1: the table must hold length + pad + 1 rows, so the plain
        # fill-mask pipeline (which lets the model number positions) works for every length trained.
        kwargs["max_position_embeddings"] = max_length + tokenizer_files.PAD_ID + 1
        kwargs["type_vocab_size"] = 1
    return config_class(vocab_size=vocab_size, attn_implementation="sdpa", **ids, **kwargs)


def build_model(arch: Architecture, *, vocab_size: int, max_length: int, seed: int):
    """A freshly initialised masked-LM of ``arch`` (weights from ``seed``)."""
    import torch
    import transformers

    config = model_config(arch, vocab_size=vocab_size, max_length=max_length)
    torch.manual_seed(seed)
    model = getattr(transformers, FAMILIES[arch.family][1])(config)
    return model


def position_offset(arch: Architecture) -> int:
    """What the family adds to 0-based positions (RoBERTa: pad + 1)."""
    return tokenizer_files.PAD_ID + 1 if arch.family == "roberta" else 0

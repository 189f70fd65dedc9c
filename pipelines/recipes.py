"""Recipes: which seed system a run reproduces, as data. One DAG serves them all (SPEC 7).

A recipe is a named set of pipeline parameter values taken from its seed document
(``seeds/`` beside SPEC.md), the trainer it needs, and the values that define it. Profiles
(``profiles.py``) say where and how big; recipes say what. Values combine in this order:

    parameter defaults (tohoku-v3)  <-  recipe  <-  profile  <-  --param

except that a profile value contradicting one of the recipe's defining values is dropped (the
local profile's ``variants=["wordpiece"]`` narrows tohoku-v3 but cannot turn a SentencePiece
recipe into a WordPiece one), and a ``--param`` contradicting a defining value is refused.
For a list (``variants``) a subset of the recipe's value agrees with it. Adding a recipe means
adding a row here, never a code path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from components.errors import BadInput

DEFAULT = "tohoku-v3"
TRAINERS = ("model-garden", "torch")
BERT_SPECIALS = ["[PAD]", "[CLS]", "[SEP]", "[MASK]"]  # yoheikikuta's control symbols; ours for every preset


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str  # one line
    seed: str  # the seed document (file under seeds/) and the model(s) it describes
    trainer: str  # "model-garden" (TF Model Garden, TPU VM or CPU) or "torch" (the PyTorch trainer, in the pod)
    parameters: dict  # pipeline parameter values, each from the seed unless `departures` says otherwise
    defining: tuple[str, ...] = ()  # names whose values make the recipe what it is
    departures: tuple[str, ...] = field(default=())  # where the preset differs from its seed, and why

    def __post_init__(self):
        if self.trainer not in TRAINERS:
            raise ValueError(f"recipe {self.name}: trainer {self.trainer!r} not in {TRAINERS}")
        missing = [k for k in self.defining if k not in self.values()]
        if missing:
            raise ValueError(f"recipe {self.name}: defining {missing} without a value")

    def values(self) -> dict:
        """The recipe's parameter values, its trainer and data format included."""
        fmt = "tfrecord" if self.trainer == "model-garden" else "shards"
        return {"trainer": self.trainer, "data_format": fmt, **self.parameters}


# Every preset defines its trainer, data format and objective.
_OBJECTIVE = ("trainer", "data_format", "next_sentence_prediction", "whole_word_masking")

RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe(
        "tohoku-v3",
        "Tohoku BERT v3 (the default): MeCab unidic-lite + WordPiece 32768 / character 7027, CC-100 then "
        "Wikipedia, whole-word masking + NSP, Model Garden",
        seed="cl-tohoku-bert-japanese-README.txt (bert-base-japanese-v3, bert-large-japanese-v2 and -char)",
        trainer="model-garden",
        # The parameter defaults are this recipe (pipelines/parameters.py cites the README per value).
        parameters={"variants": ["wordpiece", "character"], "mecab_dic": "unidic_lite", "stage1_corpus": "cc100",
                    "whole_word_masking": True, "next_sentence_prediction": True},
        defining=(*_OBJECTIVE, "variants", "stage1_corpus"),
    ),
    Recipe(
        "tohoku-v2",
        "Tohoku BERT v2: MeCab unidic-lite + WordPiece 32768 / character 6144, Wikipedia only, one stage at "
        "512 tokens, whole-word masking + NSP, Model Garden",
        seed="tohoku-nlp-hf-models.txt (bert-base-japanese-v2, bert-base-japanese-char-v2)",
        trainer="model-garden",
        parameters={"variants": ["wordpiece", "character"], "mecab_dic": "unidic_lite", "vocab_size": 32768,
                    "character_vocab_size": 6144, "stage1_corpus": "none", "stage2_max_seq_length": 512,
                    "whole_word_masking": True, "next_sentence_prediction": True},
        defining=(*_OBJECTIVE, "variants", "stage1_corpus", "mecab_dic"),
        departures=("Wikipedia: the latest CirrusSearch dump (the seed's 20200831 dump is no longer served)",
                    "batch 512 (the v3 stage-2 size) where v2 used 256: batch size is the training config's"),
    ),
    Recipe(
        "tohoku-v1",
        "Tohoku BERT v1: MeCab ipadic + WordPiece 32000 / character 4000, Wikipedia only, one stage at 512 "
        "tokens, MLM + NSP (whole_word_masking=true gives the -whole-word-masking models), Model Garden; the "
        "corpus comes from CirrusSearch with ipadic, the nearest reproducible route (v1's 2019 XML dump + "
        "WikiExtractor is no longer served)",
        seed="tohoku-nlp-hf-models.txt (bert-base-japanese, bert-base-japanese-char, *-whole-word-masking)",
        trainer="model-garden",
        parameters={"variants": ["wordpiece", "character"], "mecab_dic": "ipadic", "vocab_size": 32000,
                    "character_vocab_size": 4000, "stage1_corpus": "none", "stage2_max_seq_length": 512,
                    "whole_word_masking": False, "next_sentence_prediction": True},
        # whole_word_masking is not defining: v1 was released with and without it.
        defining=("trainer", "data_format", "next_sentence_prediction", "variants", "stage1_corpus", "mecab_dic"),
        departures=("Wikipedia 20190901 XML dump + WikiExtractor -> the latest CirrusSearch dump (no longer served)",
                    "batch 512 (the v3 stage-2 size) where v1 used 256: batch size is the training config's"),
    ),
    Recipe(
        "yoheikikuta-sp",
        "yoheikikuta's BERT with SentencePiece: unigram 32000, lowercased, no word split, Wikipedia at 128 "
        "then 512 tokens (1M + 0.4M steps), MLM + NSP with 20 predictions, dupe 5, seed 12345, Model Garden",
        seed="yoheikikuta-bert-japanese-README.txt (create_pretraining_data flags, 1.4M-step eval)",
        trainer="model-garden",
        parameters={"variants": ["sentencepiece"], "mecab_dic": "none", "vocab_size": 32000,
                    "sp_model_type": "unigram", "sp_control_symbols": list(BERT_SPECIALS),
                    "sp_normalization": "nmt_nfkc", "do_lower_case": True, "stage1_corpus": "wikipedia",
                    "stage1_max_seq_length": 128, "stage1_max_predictions": 20, "stage1_dupe_factor": 5,
                    "stage2_max_seq_length": 512, "stage2_max_predictions": 20, "stage2_dupe_factor": 5,
                    "masked_lm_prob": 0.15, "data_seed": 12345,
                    "stage1_train_steps": 1_000_000, "stage2_train_steps": 400_000,
                    "whole_word_masking": False, "next_sentence_prediction": True},
        defining=(*_OBJECTIVE, "variants", "stage1_corpus", "mecab_dic", "do_lower_case"),
        departures=("Wikipedia: the latest CirrusSearch dump, not jawiki-20181220 pages-articles + WikiExtractor",),
    ),
    Recipe(
        "rinna-roberta",
        "rinna's Japanese RoBERTa: SentencePiece unigram 32000 (yoheikikuta's settings), lowercased, CC-100 + "
        "Wikipedia in one stage, MLM only; RoBERTa-base with the PyTorch trainer (plan rinna-roberta: 512 tokens)",
        seed="rinna-japanese-roberta-base-card.txt (rinna/japanese-roberta-base)",
        trainer="torch",
        parameters={"variants": ["sentencepiece"], "mecab_dic": "none", "vocab_size": 32000,
                    "sp_model_type": "unigram", "sp_control_symbols": list(BERT_SPECIALS),
                    "sp_normalization": "nmt_nfkc", "do_lower_case": True, "stage1_corpus": "cc100",
                    "whole_word_masking": False, "next_sentence_prediction": False, "torch_plan": "rinna-roberta"},
        defining=(*_OBJECTIVE, "variants", "mecab_dic", "torch_plan"),
        departures=("shards of both corpora; the PyTorch trainer trains them as one stage",),
    ),
    Recipe(
        "modernbert-ja",
        "SB Intuitions' ModernBERT-Ja: SentencePiece unigram with byte fallback (vocab 102400), no word split, "
        "MLM only at 30% masking (then 15%), packed sequences; ModernBERT-130m with the PyTorch trainer (plan "
        "modernbert-ja: 1024 packed, 8192 best-fit packed, 8192 unpacked at 15%)",
        seed="sbintuitions-modernbert-ja-130m-card.txt (sbintuitions/modernbert-ja-130m)",
        trainer="torch",
        parameters={"variants": ["sentencepiece"], "mecab_dic": "none", "vocab_size": 102_400,
                    "sp_model_type": "unigram", "sp_byte_fallback": True, "sp_control_symbols": list(BERT_SPECIALS),
                    "stage1_corpus": "cc100", "masked_lm_prob": 0.30,
                    "whole_word_masking": False, "next_sentence_prediction": False, "torch_plan": "modernbert-ja"},
        defining=(*_OBJECTIVE, "variants", "mecab_dic", "sp_byte_fallback", "torch_plan"),
        departures=("CC-100 + Wikipedia instead of their 4.39T-token Japanese/English web corpus",
                    "BERT-style special tokens ([CLS] [SEP] [MASK] [PAD]) in place of <s> </s> <mask> <pad>",
                    "sequence lengths, packing and the 15% phase are the PyTorch trainer's (load time)"),
    ),
    Recipe(
        "bybert",
        "Tohoku's byte-level bybert: 256 bytes + specials, whole-word masking over MeCab unidic-lite words, "
        "MLM only; a Llama-style encoder (EuroBERT) with the PyTorch trainer (plan bybert: 1024 best-fit packed)",
        seed="tohoku-nlp-hf-models.txt (bybert-jp-100m / -200m / -400m)",
        trainer="torch",
        parameters={"variants": ["byte"], "mecab_dic": "unidic_lite", "word_splitter": "mecab",
                    "stage1_corpus": "cc100", "masked_lm_prob": 0.30, "whole_word_masking": True,
                    "next_sentence_prediction": False, "torch_plan": "bybert"},
        defining=(*_OBJECTIVE, "variants", "torch_plan"),
        departures=("words from MeCab unidic-lite unless word_splitter=vibrato with vibrato_dict_url (the "
                    "bccwj-suw+unidic-cwj 3.1.1 system.dic.zst from vibrato's release archive; no default URL, "
                    "so word_splitter stays 'mecab')", "CC-100 + Wikipedia instead of the llm-jp-corpus v3 subset"),
    ),
)}


def get(name: str) -> Recipe:
    if name not in RECIPES:
        raise BadInput(f"unknown recipe {name!r}; known: {', '.join(RECIPES)} (bertja recipes lists them)")
    return RECIPES[name]


def agrees(defined, value) -> bool:
    """Whether ``value`` keeps a defining value: equal, or for a list a non-empty subset of it."""
    if isinstance(defined, (list, tuple)):
        return isinstance(value, (list, tuple)) and bool(value) and set(value) <= set(defined)
    return value == defined


def combine(recipe_name: str, profile_values: dict, overrides: dict) -> dict:
    """recipe <- profile (minus what contradicts a defining value) <- overrides (refused if they do).

    Returns the values to lay over the parameter defaults (``parameters.merged`` checks names).
    """
    recipe = get(recipe_name)
    values = recipe.values()
    for key, value in overrides.items():
        if key in recipe.defining and not agrees(values[key], value):
            raise BadInput(f"--param {key}={value!r} contradicts recipe {recipe.name!r}, which defines "
                           f"{key}={values[key]!r} (choose another --recipe, or leave {key} out)")
    for key, value in profile_values.items():
        if key not in recipe.defining or agrees(values[key], value):
            values[key] = value
    return {**values, **overrides}


def table() -> list[dict]:
    """One row per recipe, for ``bertja recipes`` and the README."""
    return [{"name": r.name, "description": r.description, "seed": r.seed, "trainer": r.trainer,
             "departures": list(r.departures)} for r in RECIPES.values()]

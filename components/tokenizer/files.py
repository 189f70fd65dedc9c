"""The tokenizer directory: special tokens, file names, reading and writing.

One place for what the tokenizer steps write and what later steps (pretraining
data, conversion, evaluation) read back, so both sides agree on ids and options.
A directory holds ``vocab.txt`` (one token per line, id = line number),
``tokenizer_config.json`` and ``special_tokens_map.json``, which together load
in ``transformers`` as ``BertJapaneseTokenizer``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property

from components import storage
from components.errors import BadInput

PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
# Ids are fixed by position: the recipe's vocabularies start with these five.
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN)
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(SPECIAL_TOKENS))
SPECIAL_TOKEN_IDS = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
NUM_UNUSED = 10  # [unused0..9] follow the special tokens (ids 5..14)
CONTINUATION_PREFIX = "##"
MODEL_MAX_LENGTH = 512
MAX_INPUT_CHARS_PER_WORD = 100  # longer words become [UNK] (BertJapaneseTokenizer's WordPiece)

SUBWORD_TYPES = ("wordpiece", "character")
DEFAULT_MECAB_DIC = "unidic_lite"

VOCAB_FILE = "vocab.txt"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
# The trained ``tokenizers`` model. Not named tokenizer.json: a fast tokenizer
# of another class must not shadow BertJapaneseTokenizer (MeCab word split).
TOKENIZERS_JSON_FILE = "wordpiece_tokenizers.json"
# SentencePiece and byte directories: a fast tokenizer transformers loads as is.
FAST_TOKENIZER_FILE = "tokenizer.json"
# Every directory: what later steps need to know (type, word split, lowercasing, special ids).
BERTJA_TOKENIZER_FILE = "bertja_tokenizer.json"
TOKENIZER_TYPES = (*SUBWORD_TYPES, "sentencepiece", "byte")
# word_splitter "vibrato": the dictionary travels inside the directory, so the data steps need no source.
VIBRATO_DIR = "vibrato"


def reserved_tokens(num_unused: int = NUM_UNUSED) -> list[str]:
    """The tokens at the head of every vocabulary: specials, then ``[unusedN]``."""
    if num_unused < 0:
        raise BadInput(f"num_unused={num_unused}: must be >= 0")
    return [*SPECIAL_TOKENS, *(f"[unused{i}]" for i in range(num_unused))]


@dataclass(frozen=True)
class TokenizerFiles:
    """What a tokenizer directory says: its tokens (id = index) and options."""

    tokens: tuple[str, ...]
    subword_tokenizer_type: str  # "wordpiece" | "character"
    do_lower_case: bool
    mecab_dic: str
    word_tokenizer_type: str = "mecab"

    @cached_property
    def vocab(self) -> dict[str, int]:
        """Token -> id."""
        return dict(zip(self.tokens, range(len(self.tokens))))

    def __len__(self) -> int:
        return len(self.tokens)


def tokenizer_config(*, subword_tokenizer_type: str, do_lower_case: bool = False,
                     mecab_dic: str = DEFAULT_MECAB_DIC) -> dict:
    """``tokenizer_config.json`` content for a BertJapaneseTokenizer with MeCab words."""
    if subword_tokenizer_type not in SUBWORD_TYPES:
        raise BadInput(f"subword_tokenizer_type={subword_tokenizer_type!r}: not one of {SUBWORD_TYPES}")
    return {
        "tokenizer_class": "BertJapaneseTokenizer",
        "model_max_length": MODEL_MAX_LENGTH,
        "do_lower_case": bool(do_lower_case),
        "word_tokenizer_type": "mecab",
        "subword_tokenizer_type": subword_tokenizer_type,
        "mecab_kwargs": {"mecab_dic": mecab_dic},
        **_special_tokens_map(),
    }


def _special_tokens_map() -> dict[str, str]:
    return {"unk_token": UNK_TOKEN, "sep_token": SEP_TOKEN, "pad_token": PAD_TOKEN,
            "cls_token": CLS_TOKEN, "mask_token": MASK_TOKEN}


def write_tokenizer_dir(output_dir: str, tokens: list[str], *, subword_tokenizer_type: str,
                        do_lower_case: bool = False, mecab_dic: str = DEFAULT_MECAB_DIC) -> list[str]:
    """Writes vocab.txt, tokenizer_config.json, special_tokens_map.json and bertja_tokenizer.json; returns their URIs."""
    _check_tokens(tokens, f"{output_dir} (vocabulary to write)")
    config = tokenizer_config(subword_tokenizer_type=subword_tokenizer_type,
                              do_lower_case=do_lower_case, mecab_dic=mecab_dic)
    written = []
    for name, text in (
        (VOCAB_FILE, "".join(f"{t}\n" for t in tokens)),
        (TOKENIZER_CONFIG_FILE, json.dumps(config, ensure_ascii=False, indent=2) + "\n"),
        (SPECIAL_TOKENS_MAP_FILE, json.dumps(_special_tokens_map(), indent=2) + "\n"),
    ):
        uri = storage.join(output_dir, name)
        storage.write_text(uri, text)
        written.append(uri)
    written.append(write_tokenizer_info(output_dir, tokenizer_info(
        type=subword_tokenizer_type, word_splitter="mecab", mecab_dic=mecab_dic, do_lower_case=do_lower_case,
        vocab_size=len(tokens))))
    return written


def read_tokens(vocab_uri: str) -> list[str]:
    """The tokens of a ``vocab.txt`` (id = line number), read the way transformers reads it."""
    tokens = storage.read_lines(vocab_uri)
    _check_tokens(tokens, vocab_uri)
    return tokens


def load_vocab(tokenizer_dir: str) -> TokenizerFiles:
    """Reads a tokenizer directory's vocab and config (local path, file:// or gs://)."""
    tokens = read_tokens(storage.join(tokenizer_dir, VOCAB_FILE))
    config_uri = storage.join(tokenizer_dir, TOKENIZER_CONFIG_FILE)
    config = storage.read_json_object(config_uri)
    subword = config.get("subword_tokenizer_type", "wordpiece")
    if subword not in SUBWORD_TYPES:
        raise BadInput(f"{config_uri}: subword_tokenizer_type={subword!r} is not one of {SUBWORD_TYPES}")
    word = config.get("word_tokenizer_type", "basic")
    if word != "mecab":
        raise BadInput(f"{config_uri}: word_tokenizer_type={word!r}; this project's tokenizers use 'mecab'")
    mecab_kwargs = config.get("mecab_kwargs") or {}
    return TokenizerFiles(
        tokens=tuple(tokens),
        subword_tokenizer_type=subword,
        do_lower_case=bool(config.get("do_lower_case", False)),
        mecab_dic=mecab_kwargs.get("mecab_dic", DEFAULT_MECAB_DIC),
        word_tokenizer_type=word,
    )


def _check_tokens(tokens: list[str], where: str) -> None:
    head = tuple(tokens[:len(SPECIAL_TOKENS)])
    if head != SPECIAL_TOKENS:
        raise BadInput(f"{where}: the vocabulary must start with {' '.join(SPECIAL_TOKENS)} "
                       f"(ids 0..{len(SPECIAL_TOKENS) - 1}), found {' '.join(head) or 'nothing'}")
    if len(set(tokens)) == len(tokens) and "" not in tokens:
        return
    seen: dict[str, int] = {}  # which line is at fault
    for i, token in enumerate(tokens):
        if token == "":
            raise BadInput(f"{where}:{i + 1}: empty token")
        if token in seen:
            raise BadInput(f"{where}:{i + 1}: token {token!r} repeats line {seen[token] + 1}")
        seen[token] = i


def tokenizer_info(*, type: str, word_splitter: str, mecab_dic: str, do_lower_case: bool,
                   vocab_size: int, vibrato_dict: str | None = None) -> dict:
    """``bertja_tokenizer.json``: how the data step splits and groups words, with no extra parameter.

    ``word_splitter`` is "mecab" (``mecab_dic`` names the dictionary), "vibrato"
    (``vibrato_dict``: the dictionary's path inside the directory) or "none"
    (tokens are not grouped into words: masking is per token).
    """
    from components.mecab import check_word_splitter

    if type not in TOKENIZER_TYPES:
        raise BadInput(f"tokenizer type={type!r}: not one of {TOKENIZER_TYPES}")
    check_word_splitter(word_splitter)
    if (word_splitter == "vibrato") != bool(vibrato_dict):
        raise BadInput(f"word_splitter={word_splitter!r}: vibrato_dict={vibrato_dict!r} "
                       "(a vibrato dictionary goes with word_splitter 'vibrato' and only with it)")
    info = {"type": type, "word_splitter": word_splitter,
            "mecab_dic": mecab_dic if word_splitter == "mecab" else "none",
            "do_lower_case": bool(do_lower_case), "vocab_size": int(vocab_size),
            "special_token_ids": dict(SPECIAL_TOKEN_IDS)}
    if vibrato_dict:
        info["vibrato_dict"] = vibrato_dict
    return info


def copy_vibrato_dict(source: str, output_dir: str) -> str:
    """Copies a vibrato dictionary (file or text directory) under ``output_dir``; returns its relative path."""
    from components.mecab import VIBRATO_TEXT_FILES, vibrato_dict_kind

    if vibrato_dict_kind(source) == "compiled":
        name = f"{VIBRATO_DIR}/{storage.basename(source)}"
        storage.copy(source, storage.join(output_dir, name))
        return name
    for n in VIBRATO_TEXT_FILES:
        storage.copy(storage.join(source, n), storage.join(output_dir, VIBRATO_DIR, n))
    return VIBRATO_DIR


def word_splitter_for(tokenizer_dir: str, info: dict | None = None):
    """The splitter that groups this directory's tokens into words (None: every token its own group)."""
    from components.mecab import make_word_splitter

    info = info or read_tokenizer_info(tokenizer_dir)
    vibrato = info.get("vibrato_dict")
    return make_word_splitter(info["word_splitter"], mecab_dic=info["mecab_dic"],
                              vibrato_dict=storage.join(tokenizer_dir, vibrato) if vibrato else None)


def write_tokenizer_info(output_dir: str, info: dict) -> str:
    uri = storage.join(output_dir, BERTJA_TOKENIZER_FILE)
    storage.write_text(uri, json.dumps(info, ensure_ascii=False, indent=2) + "\n")
    return uri


def read_tokenizer_info(tokenizer_dir: str) -> dict:
    """A directory's ``bertja_tokenizer.json``; for one written before it existed, the same from its config."""
    uri = storage.join(tokenizer_dir, BERTJA_TOKENIZER_FILE)
    if storage.exists(uri):
        info = storage.read_json_object(uri)
        missing = {"type", "word_splitter", "mecab_dic", "do_lower_case", "vocab_size"} - set(info)
        if missing or info["type"] not in TOKENIZER_TYPES:
            raise BadInput(f"{uri}: needs type (one of {TOKENIZER_TYPES}), word_splitter, mecab_dic, "
                           f"do_lower_case and vocab_size; missing {sorted(missing) or 'nothing'}, type={info.get('type')!r}")
        return info
    vocab = load_vocab(tokenizer_dir)
    return tokenizer_info(type=vocab.subword_tokenizer_type, word_splitter="mecab", mecab_dic=vocab.mecab_dic,
                          do_lower_case=vocab.do_lower_case, vocab_size=len(vocab))


def token_strings(tokenizer_dir: str) -> list[str]:
    """Every token's text, by id, for any tokenizer directory (vocab.txt or tokenizer.json)."""
    if read_tokenizer_info(tokenizer_dir)["type"] in SUBWORD_TYPES:
        return list(load_vocab(tokenizer_dir).tokens)
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(storage.read_text(storage.join(tokenizer_dir, FAST_TOKENIZER_FILE)))
    return [tokenizer.id_to_token(i) for i in range(tokenizer.get_vocab_size(with_added_tokens=True))]


def write_fast_tokenizer_dir(output_dir: str, tokenizer_json: str, *, info: dict) -> list[str]:
    """tokenizer.json + tokenizer_config.json + special_tokens_map.json + bertja_tokenizer.json.

    ``AutoTokenizer.from_pretrained(DIR)`` loads it as a fast tokenizer whose
    special tokens are the five above at ids 0..4 (checked here before writing).
    """
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    for token, i in SPECIAL_TOKEN_IDS.items():
        if tokenizer.token_to_id(token) != i:
            raise BadInput(f"{output_dir}: {token} must have id {i}, has {tokenizer.token_to_id(token)}")
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": MODEL_MAX_LENGTH,
              "do_lower_case": bool(info["do_lower_case"]), "clean_up_tokenization_spaces": False,
              "model_input_names": ["input_ids", "token_type_ids", "attention_mask"], **_special_tokens_map()}
    written = []
    for name, text in (
        (FAST_TOKENIZER_FILE, tokenizer_json),
        (TOKENIZER_CONFIG_FILE, json.dumps(config, ensure_ascii=False, indent=2) + "\n"),
        (SPECIAL_TOKENS_MAP_FILE, json.dumps(_special_tokens_map(), indent=2) + "\n"),
    ):
        uri = storage.join(output_dir, name)
        storage.write_text(uri, text)
        written.append(uri)
    written.append(write_tokenizer_info(output_dir, info))
    return written

"""The character tokenizer: the head of the WordPiece vocabulary (recipe step 7).

The recipe's character vocabulary is the first 7,027 WordPiece tokens: the 15
reserved tokens and the 7,012 alphabet characters. Taking it from the WordPiece
directory keeps the two models' ids for characters identical.
"""

from __future__ import annotations

from components import storage
from components.errors import BadInput
from components.tokenizer import files

RECIPE_SIZE = 7027


def make_character_tokenizer(wordpiece_dir: str, output_dir: str, *, size: int | None = RECIPE_SIZE) -> dict:
    """Writes a character tokenizer dir from the first ``size`` WordPiece tokens.

    ``size=None`` takes every leading reserved and single-character token (for a
    vocabulary built from a smaller alphabet than UniDic's). Returns
    ``{"vocab_size", "characters"}``.
    """
    storage.check_outputs([wordpiece_dir], dirs=[output_dir])
    wordpiece = files.load_vocab(wordpiece_dir)
    n_reserved = _reserved_count(wordpiece.tokens)
    n_chars = 0
    while n_reserved + n_chars < len(wordpiece) and len(wordpiece.tokens[n_reserved + n_chars]) == 1:
        n_chars += 1
    if size is None:
        size = n_reserved + n_chars
    if size > len(wordpiece):
        raise BadInput(f"size={size}: larger than the WordPiece vocabulary of {wordpiece_dir} "
                       f"({len(wordpiece)} tokens)")
    if size > n_reserved + n_chars:
        raise BadInput(f"size={size}: the vocabulary of {wordpiece_dir} has {n_reserved} reserved tokens "
                       f"+ {n_chars} single characters; token {size - 1} would be "
                       f"{wordpiece.tokens[size - 1]!r} (use size={n_reserved + n_chars})")
    if size < len(files.SPECIAL_TOKENS):
        raise BadInput(f"size={size}: must keep at least the {len(files.SPECIAL_TOKENS)} special tokens")
    tokens = list(wordpiece.tokens[:size])
    files.write_tokenizer_dir(output_dir, tokens, subword_tokenizer_type="character",
                              do_lower_case=wordpiece.do_lower_case, mecab_dic=wordpiece.mecab_dic)
    return {"vocab_size": size, "characters": max(0, size - n_reserved)}


def tokenizer_for_variant(variant: str, wordpiece_dir: str, output_dir: str) -> dict:
    """The tokenizer directory a model variant trains with.

    ``wordpiece``: the WordPiece directory's files, copied. ``character``: its
    reserved tokens and alphabet (7,027 tokens with the recipe's alphabet).
    Returns ``{"vocab_size", ...}``.
    """
    if variant == "character":
        return make_character_tokenizer(wordpiece_dir, output_dir, size=None)
    if variant != "wordpiece":
        raise BadInput(f"variant={variant!r}: not one of {files.SUBWORD_TYPES}")
    storage.check_outputs([wordpiece_dir], dirs=[output_dir])
    wordpiece = files.load_vocab(wordpiece_dir)
    for name in (files.VOCAB_FILE, files.TOKENIZER_CONFIG_FILE, files.SPECIAL_TOKENS_MAP_FILE,
                 files.TOKENIZERS_JSON_FILE, files.BERTJA_TOKENIZER_FILE):
        if storage.exists(storage.join(wordpiece_dir, name)):
            storage.copy(storage.join(wordpiece_dir, name), storage.join(output_dir, name))
    return {"vocab_size": len(wordpiece)}


def _reserved_count(tokens: tuple[str, ...]) -> int:
    """Specials plus the ``[unusedN]`` run after them."""
    n = len(files.SPECIAL_TOKENS)
    while n < len(tokens) and tokens[n] == f"[unused{n - len(files.SPECIAL_TOKENS)}]":
        n += 1
    return n

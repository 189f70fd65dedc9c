"""One entry for the tokenizer a model variant uses, whatever its type (the pipeline's variant step).

``options`` are keyed by the pipeline's parameter names (``vocab_size``,
``sp_byte_fallback``, ``mecab_dic`` ...); each type takes the ones that apply
to it, so one call site serves every preset. WordPiece/character come from the
WordPiece directory (MeCab words), SentencePiece is trained on the corpus
sample, bytes need nothing but the word splitter for whole-word masking
(``vibrato_dict``: the dictionary when that splitter is vibrato).
"""

from __future__ import annotations

from components.errors import BadInput
from components.tokenizer import files

# Pipeline parameter -> train_sentencepiece keyword.
SENTENCEPIECE_OPTIONS = {
    "vocab_size": "vocab_size", "sp_model_type": "model_type", "sp_character_coverage": "character_coverage",
    "sp_byte_fallback": "byte_fallback", "sp_split_digits": "split_digits",
    "sp_control_symbols": "control_symbols", "sp_user_symbols": "user_symbols",
    "sp_normalization": "normalization", "do_lower_case": "do_lower_case", "seed": "seed",
}
BYTE_OPTIONS = {"mecab_dic": "mecab_dic", "word_splitter": "word_splitter", "do_lower_case": "do_lower_case"}
OPTION_NAMES = {*SENTENCEPIECE_OPTIONS, *BYTE_OPTIONS, "character_vocab_size"}


def build_variant_tokenizer(variant: str, *, output_dir: str, wordpiece_dir: str | None = None,
                            sample_uris=(), vibrato_dict: str | None = None, options: dict | None = None,
                            workers: int = 1) -> dict:
    """Writes ``variant``'s tokenizer directory; returns the step's statistics (with ``type``)."""
    options = dict(options or {})
    unknown = sorted(set(options) - OPTION_NAMES)
    if unknown:
        raise BadInput(f"tokenizer options {unknown}: not among {sorted(OPTION_NAMES)}")
    if variant in files.SUBWORD_TYPES:
        if not wordpiece_dir:
            raise BadInput(f"variant={variant!r}: needs the WordPiece tokenizer directory (the wordpiece input)")
        from components.tokenizer.character import make_character_tokenizer, tokenizer_for_variant

        size = int(options.get("character_vocab_size", 0) or 0)
        if variant == "character" and size:
            stats = make_character_tokenizer(wordpiece_dir, output_dir, size=size)
        else:
            stats = tokenizer_for_variant(variant, wordpiece_dir, output_dir)
    elif variant == "sentencepiece":
        sample = [sample_uris] if isinstance(sample_uris, str) else list(sample_uris or ())
        if not sample:
            raise BadInput("variant='sentencepiece': needs the corpus sample to train on (the sample input)")
        if "vocab_size" not in options:
            raise BadInput("variant='sentencepiece': needs vocab_size")
        from components.tokenizer.sentencepiece import train_sentencepiece

        stats = train_sentencepiece(sample, output_dir, workers=workers, **_keywords(options, SENTENCEPIECE_OPTIONS))
    elif variant == "byte":
        from components.tokenizer.byte import write_byte_tokenizer

        stats = write_byte_tokenizer(output_dir, vibrato_dict=vibrato_dict, **_keywords(options, BYTE_OPTIONS))
    else:
        raise BadInput(f"variant={variant!r}: not one of {files.TOKENIZER_TYPES}")
    return {"type": variant, **stats}


def _keywords(options: dict, names: dict) -> dict:
    return {names[k]: v for k, v in options.items() if k in names}

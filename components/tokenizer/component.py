"""KFP components: character alphabet, WordPiece tokenizer, per-variant tokenizer (any type)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Model, Output

from components.images import image

DATA_IMAGE = image("data")


@dsl.component(base_image=DATA_IMAGE, install_kfp_package=False)
def alphabet(lex: Input[Dataset], characters: Output[Dataset]):
    """UniDic lex.csv surfaces -> the sorted character alphabet (SPEC 6.3)."""
    from components import artifacts, storage
    from components.tokenizer.alphabet import build_alphabet

    (src,) = artifacts.data_files(lex.uri, lex.path)
    root = artifacts.data_root(characters.uri, characters.path)
    result = build_alphabet(src, storage.join(root, "alphabet.txt"))
    artifacts.write_manifest(characters.path, {"files": ["alphabet.txt"], "stats": result})


@dsl.component(base_image=DATA_IMAGE, install_kfp_package=False)
def wordpiece_tokenizer(sample: Input[Dataset], characters: Input[Dataset], vocab_size: int, limit_alphabet: int,
                        num_unused_tokens: int, min_frequency: int, mecab_dic: str, do_lower_case: bool,
                        tokenizer: Output[Model], report: Output[Markdown], words: bool = False):
    """MeCab words -> WordPiece vocab; a directory BertJapaneseTokenizer loads.

    ``words``: the sample is of word-split shards (``split_words``): MeCab does not run again.
    """
    from components import artifacts, reports
    from components.resources import available_cpus
    from components.tokenizer.wordpiece import train_wordpiece

    inputs = artifacts.data_files(sample.uri, sample.path)
    (alpha,) = artifacts.data_files(characters.uri, characters.path)
    result = train_wordpiece(inputs, artifacts.data_root(tokenizer.uri, tokenizer.path),
                             vocab_size=int(vocab_size), limit_alphabet=int(limit_alphabet),
                             initial_alphabet=alpha,
                             num_unused=int(num_unused_tokens), min_frequency=int(min_frequency),
                             mecab_dic=mecab_dic, do_lower_case=bool(do_lower_case), workers=available_cpus(),
                             words=bool(words))
    artifacts.write_manifest(tokenizer.path, {"subword": "wordpiece", "stats": result})
    tokenizer.metadata.update({"subword": "wordpiece"})
    with open(report.path, "w") as f:
        f.write(reports.markdown_table("WordPiece tokenizer", result))


@dsl.component(base_image=DATA_IMAGE, install_kfp_package=False)
def variant_tokenizer(variant: str, tokenizer: Output[Model], wordpiece: Input[Model] = None,
                      sample: Input[Dataset] = None, vocab_size: int = 32000, character_vocab_size: int = 0,
                      mecab_dic: str = "unidic_lite", do_lower_case: bool = False, sp_model_type: str = "unigram",
                      sp_character_coverage: float = 0.9995, sp_byte_fallback: bool = False,
                      sp_split_digits: bool = False, sp_control_symbols: list = ["[PAD]", "[CLS]", "[SEP]", "[MASK]"],
                      sp_user_symbols: list = [], sp_normalization: str = "nmt_nfkc", seed: int = 0,
                      word_splitter: str = "mecab", vibrato_dict: Input[Dataset] = None):
    """The tokenizer a model variant uses: the WordPiece one or its character subset (from ``wordpiece``),
    SentencePiece trained on ``sample``, or bytes (words for whole-word masking: ``mecab_dic``, or
    ``word_splitter`` "vibrato" with the downloaded ``vibrato_dict``)."""
    from components import artifacts
    from components.resources import available_cpus
    from components.errors import BadInput
    from components.tokenizer.variants import build_variant_tokenizer

    options = {"vocab_size": int(vocab_size), "character_vocab_size": int(character_vocab_size),
               "mecab_dic": mecab_dic, "do_lower_case": bool(do_lower_case), "sp_model_type": sp_model_type,
               "sp_character_coverage": float(sp_character_coverage), "sp_byte_fallback": bool(sp_byte_fallback),
               "sp_split_digits": bool(sp_split_digits), "sp_control_symbols": list(sp_control_symbols),
               "sp_user_symbols": list(sp_user_symbols), "sp_normalization": sp_normalization, "seed": int(seed),
               "word_splitter": word_splitter}
    vibrato_files = artifacts.data_files(vibrato_dict.uri, vibrato_dict.path) if vibrato_dict is not None else []
    if len(vibrato_files) > 1:
        raise BadInput(f"vibrato_dict: one dictionary file expected, got {vibrato_files}")
    result = build_variant_tokenizer(
        variant, output_dir=artifacts.data_root(tokenizer.uri, tokenizer.path),
        wordpiece_dir=artifacts.data_root(wordpiece.uri, wordpiece.path) if wordpiece is not None else None,
        sample_uris=artifacts.data_files(sample.uri, sample.path) if sample is not None else (),
        vibrato_dict=vibrato_files[0] if vibrato_files else None, options=options, workers=available_cpus())
    artifacts.write_manifest(tokenizer.path, {"subword": variant, "stats": result})
    tokenizer.metadata.update({"subword": variant})

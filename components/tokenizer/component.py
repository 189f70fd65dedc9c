"""KFP components: character alphabet, WordPiece tokenizer, per-variant tokenizer."""

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
                        tokenizer: Output[Model], report: Output[Markdown]):
    """MeCab words -> WordPiece vocab; a directory BertJapaneseTokenizer loads."""
    from components import artifacts, reports
    from components.resources import available_cpus
    from components.tokenizer.wordpiece import train_wordpiece

    inputs = artifacts.data_files(sample.uri, sample.path)
    (alpha,) = artifacts.data_files(characters.uri, characters.path)
    result = train_wordpiece(inputs, artifacts.data_root(tokenizer.uri, tokenizer.path),
                             vocab_size=int(vocab_size), limit_alphabet=int(limit_alphabet),
                             initial_alphabet=alpha,
                             num_unused=int(num_unused_tokens), min_frequency=int(min_frequency),
                             mecab_dic=mecab_dic, do_lower_case=bool(do_lower_case), workers=available_cpus())
    artifacts.write_manifest(tokenizer.path, {"subword": "wordpiece", "stats": result})
    tokenizer.metadata.update({"subword": "wordpiece"})
    with open(report.path, "w") as f:
        f.write(reports.markdown_table("WordPiece tokenizer", result))


@dsl.component(base_image=DATA_IMAGE, install_kfp_package=False)
def variant_tokenizer(variant: str, wordpiece: Input[Model], tokenizer: Output[Model]):
    """The tokenizer a model variant uses: the WordPiece one, or its character subset."""
    from components import artifacts
    from components.tokenizer.character import tokenizer_for_variant

    result = tokenizer_for_variant(variant, artifacts.data_root(wordpiece.uri, wordpiece.path),
                                   artifacts.data_root(tokenizer.uri, tokenizer.path))
    artifacts.write_manifest(tokenizer.path, {"subword": variant, "stats": result})
    tokenizer.metadata.update({"subword": variant})

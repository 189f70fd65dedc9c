"""The byte tokenizer (Tohoku's bybert): the 256 UTF-8 bytes after the five special tokens.

No training: ids 0..4 are ``[PAD] [UNK] [CLS] [SEP] [MASK]`` as in every
vocabulary here, byte ``b`` is id ``5 + b`` with the piece ``<0xHH>``. The
``tokenizer.json`` is a ``tokenizers`` BPE with no merges and byte fallback over
an empty character vocabulary, so every character becomes its bytes (literal
text such as ``<0x41>`` too, which a vocabulary lookup would take whole), and
decoding fuses the bytes back into text. Whole-word masking needs words, which
bytes do not give: the directory records the word splitter the data step
uses: MeCab (``mecab_dic``; "none" for per-byte masking) or vibrato, whose
dictionary is copied into the directory (bybert's own splitter).
"""

from __future__ import annotations

from components import storage
from components.errors import BadInput
from components.mecab import NO_WORD_SPLIT, check_mecab_dic, check_word_splitter, load_vibrato
from components.tokenizer import files

BYTE_OFFSET = len(files.SPECIAL_TOKENS)


def byte_tokens() -> list[str]:
    return [*files.SPECIAL_TOKENS, *(f"<0x{b:02X}>" for b in range(256))]


def tokenizer_json(*, do_lower_case: bool = False) -> str:
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE

    vocab = {token: i for i, token in enumerate(byte_tokens())}
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=[], unk_token=files.UNK_TOKEN, byte_fallback=True))
    if do_lower_case:
        tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in files.SPECIAL_TOKENS])
    cls, sep = files.CLS_TOKEN, files.SEP_TOKEN
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, files.CLS_ID), (sep, files.SEP_ID)])
    return tokenizer.to_str()


def write_byte_tokenizer(output_dir: str, *, mecab_dic: str = files.DEFAULT_MECAB_DIC,
                         word_splitter: str = "mecab", vibrato_dict: str | None = None,
                         do_lower_case: bool = False) -> dict:
    """Writes the byte tokenizer directory with the word splitter for whole-word masking.

    ``word_splitter`` "mecab" uses ``mecab_dic`` ("none" there: no words);
    "vibrato" needs ``vibrato_dict`` (a ``.dic``/``.dic.zst`` file or a text
    dictionary directory), loaded once here so a bad one fails this step.
    """
    check_mecab_dic(mecab_dic)
    splitter = check_word_splitter(word_splitter)
    if splitter == "mecab" and mecab_dic == NO_WORD_SPLIT:
        splitter = NO_WORD_SPLIT
    if splitter == "vibrato":
        if not vibrato_dict:
            raise BadInput("word_splitter='vibrato': needs the vibrato dictionary (vibrato_dict)")
        load_vibrato(vibrato_dict)
    elif vibrato_dict:
        raise BadInput(f"vibrato_dict={vibrato_dict!r}: given, but word_splitter={word_splitter!r} does not use it")
    storage.check_outputs([vibrato_dict], dirs=[output_dir])
    copied = files.copy_vibrato_dict(vibrato_dict, output_dir) if splitter == "vibrato" else None
    files.write_fast_tokenizer_dir(output_dir, tokenizer_json(do_lower_case=do_lower_case), info=files.tokenizer_info(
        type="byte", word_splitter=splitter, mecab_dic=mecab_dic, do_lower_case=do_lower_case,
        vocab_size=len(byte_tokens()), vibrato_dict=copied))
    stats = {"vocab_size": len(byte_tokens()), "word_splitter": splitter, "mecab_dic": mecab_dic}
    return {**stats, "vibrato_dict": copied} if copied else stats

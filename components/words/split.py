"""``split_words``: a corpus shard -> its MeCab words, once, for every step that needs them.

The WordPiece and character variants (and tokenizer training) split the same
text into the same MeCab words; this writes them once per shard so that MeCab
runs once. Format (version 1): gzip UTF-8 text with exactly one line per input
line, so line numbers, blank lines (document ends) and line sampling carry over:

* a blank input line (after ``strip``) -> an empty line;
* any other line -> its words, joined by single ASCII spaces, as
  ``WordSplitter`` gives them without lowercasing (NFKC, no whitespace words;
  MeCab never puts an ASCII space in a word: checked, a word with one is an
  error), so one file serves cased and lowercased variants;
* a non-blank line with no words -> a single space (``NO_WORDS``).

``OUTPUT.meta.json`` beside it (written last: the pair is complete when it
exists) says the format, the word splitter and dictionary, the source and the
line count, which readers check.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from isal import isal_zlib

from components import storage
from components.errors import BadInput
from components.mecab import NO_WORD_SPLIT, WordSplitter, check_mecab_dic
from components.parallel import ordered_map
from components.progress import Progress

FORMAT, VERSION = "bertja-words", 1
META_SUFFIX = ".meta.json"
WORDS_SUFFIX = ".words.gz"
NO_WORDS = " "
CHUNK_BYTES = 1 << 18  # input per task sent to a worker (~2,000 lines)
GZIP_LEVEL = 1  # ISA-L's fastest: the file is read back a few times, never kept long


def meta_uri(words_uri: str) -> str:
    return words_uri + META_SUFFIX


_SPLITTER: WordSplitter | None = None


def _set_splitter(mecab_dic: str) -> None:
    global _SPLITTER
    _SPLITTER = WordSplitter(mecab_dic, do_lower_case=False)


def _split_chunk(chunk: tuple[str, int, list[bytes]]) -> tuple[bytes, int]:
    """The chunk's output lines (UTF-8) and its word count."""
    uri, first, lines = chunk
    split = _SPLITTER
    out, n_words = [], 0
    for lineno, raw in enumerate(lines, first):
        line = storage.decode_line(uri, lineno, raw).strip()
        if not line:
            out.append("")
            continue
        words = split(line)
        if not words:
            out.append(NO_WORDS)
            continue
        joined = " ".join(words)
        if joined.count(" ") != len(words) - 1:
            raise BadInput(f"{uri}:{lineno}: a MeCab word contains an ASCII space ({words!r}); "
                           "the word-split format cannot hold it")
        out.append(joined)
        n_words += len(words)
    return ("\n".join(out) + "\n").encode("utf-8"), n_words


def raw_chunks(uri: str, progress: Progress) -> Iterator[tuple[str, int, list[bytes]]]:
    """``(uri, first line number, raw lines)`` of about ``CHUNK_BYTES``: a worker names a bad line
    exactly. ``readlines`` splits the lines in C: the parent does no work per line."""
    with storage.open_read(uri) as f:
        first = 1
        while chunk := f.readlines(CHUNK_BYTES):
            progress.add(len(chunk))
            yield uri, first, chunk
            first += len(chunk)


def split_words(input_uri: str, output_uri: str, *, mecab_dic: str = "unidic_lite", workers: int = 1) -> dict:
    """Writes ``input_uri``'s MeCab words to ``output_uri`` (gzip) and its ``.meta.json``; returns the meta.

    The same input gives the same bytes whatever ``workers`` is.
    """
    if check_mecab_dic(mecab_dic) == NO_WORD_SPLIT:
        raise BadInput(f"mecab_dic={mecab_dic!r}: split-words needs a MeCab dictionary")
    if workers < 1:
        raise BadInput(f"workers={workers}: must be >= 1")
    if not output_uri.endswith(".gz"):
        raise BadInput(f"output {output_uri!r}: must end with .gz (the words are gzip text)")
    storage.check_outputs([input_uri], files=[output_uri, meta_uri(output_uri)])
    started = time.monotonic()
    progress = Progress("split-words", "lines")
    n_words = 0
    with storage.open_write(output_uri, compress=False) as out:
        deflate = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, 31)  # 31: a gzip stream
        for data, words in ordered_map(_split_chunk, raw_chunks(input_uri, progress), workers=workers,
                                       initializer=_set_splitter, initargs=(mecab_dic,)):
            out.write(deflate.compress(data))
            n_words += words
        out.write(deflate.flush())
    meta = {"format": FORMAT, "version": VERSION, "word_splitter": "mecab", "mecab_dic": mecab_dic,
            "source": input_uri, "lines": progress.count, "words": n_words,
            "seconds": round(time.monotonic() - started, 3)}
    progress.done()
    storage.write_text(meta_uri(output_uri), json.dumps(meta, ensure_ascii=False, indent=2) + "\n")
    return meta


def split_many(pairs: list[tuple[str, str]], *, mecab_dic: str = "unidic_lite", workers: int = 1) -> dict:
    """``split_words`` for each (shard, words file) pair; returns the totals."""
    totals = {"shards": 0, "lines": 0, "words": 0, "seconds": 0.0}
    for input_uri, output_uri in pairs:
        meta = split_words(input_uri, output_uri, mecab_dic=mecab_dic, workers=workers)
        totals["shards"] += 1
        for key in ("lines", "words", "seconds"):
            totals[key] += meta[key]
    totals["seconds"] = round(totals["seconds"], 3)
    return totals


def read_meta(words_uri: str) -> dict:
    """The ``.meta.json`` of a word-split file, checked for format and version."""
    uri = meta_uri(words_uri)
    if not storage.exists(uri):
        raise BadInput(f"{words_uri}: no {storage.basename(uri)} beside it (not from split-words, "
                       "or not completely written)")
    meta = storage.read_json_object(uri)
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise BadInput(f"{uri}: format {meta.get('format')!r} version {meta.get('version')!r}; "
                       f"this reader reads {FORMAT!r} version {VERSION}")
    return meta


def check_words_file(words_uri: str, tokenizer) -> int:
    """Checks that ``tokenizer`` splits words as the file's words were split; returns the file's lines.

    Only MeCab-word tokenizers (wordpiece, character) take words: the others
    need the raw text (their own tokenizer.json, word starts in the text).
    """
    meta = read_meta(words_uri)
    vocab = getattr(tokenizer, "vocab", None)
    if vocab is None:
        raise BadInput(f"{words_uri}: a word-split input needs a wordpiece or character tokenizer "
                       f"(this one is {tokenizer.type!r}: give it the text)")
    if meta["word_splitter"] != "mecab" or meta["mecab_dic"] != vocab.mecab_dic:
        raise BadInput(f"{words_uri}: split with {meta['word_splitter']} {meta['mecab_dic']!r}; the tokenizer "
                       f"splits with mecab {vocab.mecab_dic!r}")
    return int(meta["lines"])


def words_or_text(shard_uri: str, words_uri: str | None, tokenizer_dir: str) -> tuple[str, bool]:
    """What the pipeline's data step reads for a shard: ``(uri, is_words)``.

    The pipeline hands every variant the same words dataset (one MeCab pass per shard);
    only a tokenizer that splits with MeCab and the same dictionary reads it. Other
    tokenizers (SentencePiece, bytes), a dataset made without words (no MeCab variant
    ran) or one split with another dictionary get the text, which gives the same output.
    """
    from components.tokenizer.files import SUBWORD_TYPES, read_tokenizer_info

    if not words_uri or not storage.exists(meta_uri(words_uri)):
        return shard_uri, False
    info = read_tokenizer_info(tokenizer_dir)
    meta = read_meta(words_uri)
    if (info["type"] in SUBWORD_TYPES and info["word_splitter"] == "mecab"
            and meta["word_splitter"] == "mecab" and meta["mecab_dic"] == info["mecab_dic"]):
        return words_uri, True
    return shard_uri, False

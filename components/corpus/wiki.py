"""Wikipedia sentence corpus from a CirrusSearch content dump (SPEC 6.1).

The output is byte-identical to the recipe's ``make_corpus_wiki.py`` on the
same input and dictionary: same cleaning, same MeCab sentence split, same
filters. What differs is how: the dump is streamed, pages are processed in
batches by ``workers`` processes, and batches are written back in input order,
so the output does not depend on the worker count.
"""

from __future__ import annotations

import bisect
import functools
import json
import re
import sys
import unicodedata

from components import storage
from components.errors import BadInput
from components.mecab import tagger_args
from components.parallel import ordered_map
from components.progress import Progress

# Cleaning rules, in the recipe's order (applied with re.sub(pattern, "", text)).
_FOOTNOTE_MARK = re.compile(r"\[\d+?\]")
_CITATION_NEEDED = re.compile(r"\[要.+?\]")
_TEMPLATE = re.compile(r"\{\{+[^{}]+?\}\}+")
_REFERENCE_SECTION = re.compile(r" \^ .+")
_ANNOTATION = re.compile(r"\[(要出典|リンク切れ|.+?\?)\]")
_WHITESPACE = re.compile(r"\s+")

DISPLAYSTYLE = "\\displaystyle"  # sentences holding TeX equations are dropped


@functools.cache
def _non_printable() -> re.Pattern:
    """A character class of every code point ``str.isprintable`` rejects."""
    ranges, start = [], None
    for cp in range(sys.maxunicode + 2):
        printable = cp > sys.maxunicode or chr(cp).isprintable()
        if not printable and start is None:
            start = cp
        elif printable and start is not None:
            ranges.append(f"{re.escape(chr(start))}-{re.escape(chr(cp - 1))}")
            start = None
    return re.compile(f"[{''.join(ranges)}]")


def clean_page_text(text: str, title: str | None = None) -> str:
    """A page's text with Wikipedia leftovers removed, on one line."""
    text = unicodedata.normalize("NFKC", text)
    if not text.isprintable():  # control characters, tabs, newlines: removed, not replaced
        text = _non_printable().sub("", text)
    text = _FOOTNOTE_MARK.sub("", text)
    text = _CITATION_NEEDED.sub("", text)
    text = _TEMPLATE.sub("", text)
    if title is not None:
        text = re.sub(r"^.+? \> " + re.escape(title), "", text)  # leading breadcrumb
    text = _REFERENCE_SECTION.sub("", text)
    text = _ANNOTATION.sub("", text)
    return _WHITESPACE.sub(" ", text).strip()


# MeCab writes one line per token: the surface and the raw feature string.
_TOKEN_LINES = r'-O "" -F "%m\t%H\n" -U "%m\t%H\n" -E "EOS\n"'
_TOKEN_INFO = re.compile(r"\t[^\n]*\n")
_PERIOD = re.compile("句点")
_SPACE = re.compile(" ")


class SentenceSplitter:
    """Splits text after every token MeCab tags as a sentence-final period.

    A token ends a sentence when its feature string contains both "記号" and
    "句点" (UniDic: 補助記号,句点, which also covers ASCII ``.?!`` after NFKC).
    Text after the last such token is a final sentence. Sentences are not
    stripped here. (The recipe tests the line the dictionary's own output
    format writes; for UniDic that line holds the same POS fields, and the
    sentences come out the same: see tests/test_corpus_wiki.py. The raw
    feature string is cheaper for MeCab to write.)
    """

    def __init__(self, mecab_dic: str = "unidic_lite"):
        self.mecab_dic = mecab_dic
        import fugashi

        self._tagger = fugashi.GenericTagger(f"{tagger_args(mecab_dic)} {_TOKEN_LINES}")

    def __call__(self, text: str) -> list[str]:
        parsed = self._tagger.parse(text)
        ends = self._period_ends(text, parsed)
        if ends is None:
            return self._split_by_search(text, parsed)
        sentences, start = [], 0
        for end in ends:
            sentences.append(text[start:end])
            start = end
        if text[start:]:
            sentences.append(text[start:])
        return sentences

    @staticmethod
    def _period_ends(text: str, parsed: str) -> list[int] | None:
        """Ends of the sentence-final tokens, found without a Python step per token.

        Valid when MeCab's surfaces tile the text between its spaces (always,
        for cleaned text): a token's end is then the running length of the
        surfaces, plus the spaces before it. None when they do not tile.
        """
        pieces, ends_nonspace, count, scanned, last_line = [], [], 0, 0, -1
        for m in _PERIOD.finditer(parsed):
            line_start = parsed.rfind("\n", 0, m.start()) + 1
            if line_start == last_line:
                continue
            last_line = line_start
            line_end = parsed.find("\n", line_start)
            surface, _, info = parsed[line_start:line_end].partition("\t")
            if "記号" not in info or "句点" not in info:
                continue
            piece = _TOKEN_INFO.sub("", parsed[scanned:line_start]) + surface
            pieces.append(piece)
            count += len(piece)
            ends_nonspace.append(count)
            scanned = line_end + 1
        pieces.append(_TOKEN_INFO.sub("", parsed[scanned:]))
        if "".join(pieces).rstrip("\n") != text.replace(" ", "") + "EOS":
            return None
        # Space i comes before the non-space characters from shift[i] on.
        shift = [sp.start() - i for i, sp in enumerate(_SPACE.finditer(text))]
        return [e + bisect.bisect_right(shift, e - 1) for e in ends_nonspace]

    @staticmethod
    def _split_by_search(text: str, parsed: str) -> list[str]:
        """The general walk: each token is looked up in the text from a cursor."""
        sentences, start, end = [], 0, 0
        for line in parsed.split("\n"):
            if line == "EOS":
                break
            token, info = line.split("\t", 1)
            end = text.index(token, end) + len(token)
            if "記号" in info and "句点" in info:
                sentences.append(text[start:end])
                start = end
        if text[start:]:
            sentences.append(text[start:])
        return sentences

    def __getstate__(self):
        return {"mecab_dic": self.mecab_dic}

    def __setstate__(self, state):
        self.__init__(**state)


COUNTERS = ("pages", "pages_kept", "sentences", "sentences_dropped_short",
            "sentences_dropped_long", "sentences_dropped_displaystyle")


class _PageProcessor:
    """Turns a batch of dump lines into output text and counts (runs in workers)."""

    def __init__(self, input_uri: str, min_length: int, max_length: int, mecab_dic: str):
        self.input_uri = input_uri
        self.min_length = min_length
        self.max_length = max_length
        self.split = SentenceSplitter(mecab_dic)

    def page(self, lineno: int, raw: bytes) -> dict | None:
        """The page on a line, or None for index lines and blank lines."""
        if not raw.strip():
            return None
        text = storage.decode_line(self.input_uri, lineno, raw)
        try:
            item = json.loads(text)
        except ValueError as e:
            raise BadInput(f"{self.input_uri}:{lineno}: invalid JSON ({e})") from e
        if not isinstance(item, dict):
            raise BadInput(f"{self.input_uri}:{lineno}: expected a JSON object, got {type(item).__name__}")
        if "index" in item:
            return None
        for key in ("title", "text"):
            if not isinstance(item.get(key), str):
                raise BadInput(f"{self.input_uri}:{lineno}: page has no string {key!r}")
        return item

    def __call__(self, batch: tuple[int, list[bytes]]) -> tuple[bytes, dict]:
        first_lineno, lines = batch
        counts = dict.fromkeys(COUNTERS, 0)
        out: list[str] = []
        for lineno, raw in enumerate(lines, first_lineno):
            item = self.page(lineno, raw)
            if item is None:
                continue
            counts["pages"] += 1
            kept = 0
            for sentence in self.split(clean_page_text(item["text"], title=item["title"])):
                sentence = sentence.strip()
                if len(sentence) < self.min_length:
                    counts["sentences_dropped_short"] += 1
                elif len(sentence) > self.max_length:
                    counts["sentences_dropped_long"] += 1
                elif DISPLAYSTYLE in sentence:
                    counts["sentences_dropped_displaystyle"] += 1
                else:
                    out.append(sentence)
                    kept += 1
            if kept:
                out.append("")  # a blank line closes each page that kept a sentence
                counts["pages_kept"] += 1
                counts["sentences"] += kept
        return ("\n".join(out) + "\n" if out else "").encode("utf-8"), counts


_WORKER: _PageProcessor | None = None


def _init_worker(*args) -> None:
    global _WORKER
    _WORKER = _PageProcessor(*args)


def _work(batch):
    return _WORKER(batch)


def _batches(input_uri: str, max_lines: int = 512, max_bytes: int = 4 << 20):
    """(first line number, raw lines) batches of the dump, read as a stream."""
    with storage.open_read(input_uri) as f:
        lines: list[bytes] = []
        first, size = 1, 0
        for lineno, raw in enumerate(f, 1):
            if not lines:
                first = lineno
            lines.append(raw)
            size += len(raw)
            if len(lines) >= max_lines or size >= max_bytes:
                yield first, lines
                lines, size = [], 0
        if lines:
            yield first, lines


def build_wiki_corpus(input_uri: str, output_uri: str, *, min_length: int = 10, max_length: int = 200,
                      mecab_dic: str = "unidic_lite", workers: int = 1) -> dict:
    """CirrusSearch ``.json.gz`` -> sentences, one per line, a blank line after each page.

    ``output_uri`` is gzip-compressed when it ends in ``.gz``. Returns counts of
    pages and sentences (kept and dropped, by reason) and the seconds taken.
    """
    if min_length < 0 or max_length < min_length:
        raise BadInput(f"min_length={min_length}, max_length={max_length}: need 0 <= min_length <= max_length")
    if workers < 1:
        raise BadInput(f"workers={workers}: must be >= 1")
    storage.check_outputs([input_uri], files=[output_uri])
    init_args = (input_uri, min_length, max_length, mecab_dic)
    totals = dict.fromkeys(COUNTERS, 0)
    progress = Progress("wiki corpus", "pages")
    batches = _batches(input_uri)
    _non_printable()  # built once here, inherited by forked workers
    if workers == 1:
        processor = _PageProcessor(*init_args)
        results = map(processor, batches)
    else:
        SentenceSplitter(mecab_dic)  # a bad dictionary fails here, not in a worker
        results = ordered_map(_work, batches, workers=workers, initializer=_init_worker, initargs=init_args,
                              in_flight_per_worker=3)
    with storage.open_write(output_uri) as out:
        for chunk, counts in results:
            out.write(chunk)
            for k, v in counts.items():
                totals[k] += v
            progress.add(counts["pages"])
    totals["seconds"] = round(progress.done(), 3)
    return totals

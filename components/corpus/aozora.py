"""Real Japanese prose for tests and benchmarks, from Aozora Bunko.

Aozora Bunko (https://www.aozora.gr.jp) publishes public-domain Japanese
literature in a plain-text format with ruby (``漢字《かんじ》``), ``｜`` ruby
starts and ``［＃...］`` editor's notes. We read a directory laid out like
``aozorahack/aozorabunko_text`` (``cards/<person id>/files/<name>/<name>.txt``,
Shift_JIS), keep only works by authors in ``PUBLIC_DOMAIN_AUTHORS`` (all died
before 1968, so their works are in the public domain in Japan), skip
translations and anything that carries a Creative Commons notice, strip the
markup, and write the corpus format: one sentence per line, a blank line after
each document. A document is one section of a work (sections end at headings),
cut at a paragraph boundary once it reaches ``max_document_sentences``.

This is not a recipe step; it makes the test fixture ``tests/data/ja_sentences.txt``
and the larger benchmark corpora.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from components import storage
from components.errors import BadInput
from components.progress import Progress

# Aozora person id -> author. Every one died before 1968.
PUBLIC_DOMAIN_AUTHORS: dict[str, str] = {
    "000148": "夏目漱石",
    "000879": "芥川竜之介",
    "000081": "宮沢賢治",
    "000129": "森鴎外",
    "000035": "太宰治",
    "000042": "寺田寅彦",
    "000096": "夢野久作",
    "000082": "岡本綺堂",
    "000119": "中島敦",
    "000064": "樋口一葉",
    "000050": "泉鏡花",
    "001095": "坂口安吾",
}

_GAIJI = re.compile(r"※［＃[^］]*］")          # a character the text could not encode
_NOTE = re.compile(r"［＃[^］]*］")             # editor's notes (indents, emphasis, ...)
_RUBY = re.compile(r"《[^》]*》")
_HEADING = re.compile(r"［＃[^］]*見出し[^］]*］")
_SEPARATOR = re.compile(r"^-{20,}$")
# A sentence ends at 。 (and any closing brackets after it), or at ！/？ followed
# by closing brackets and then a space or the end of the paragraph.
_SENTENCE = re.compile(r".+?(?:。+[」』）〕]*|[！？!?]+[」』）〕]*(?=[\s　]|$)|$)")
_MISSING = "\x00"
_REPEAT_MARKS = ("／＼", "／″＼")  # the vertical-text repetition sign, spelt out in two characters


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of one paragraph, stripped, empty ones dropped."""
    out = []
    for m in _SENTENCE.finditer(paragraph):
        s = m.group(0).strip(" \u3000")
        if s:
            out.append(s)
    return out


def _body_lines(text: str) -> Iterator[str]:
    """The lines of a work between its header (title, author, legend) and colophon."""
    lines = text.split("\n")
    i = 0
    while i < len(lines) and lines[i].strip():  # title, subtitle, author...
        i += 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i < len(lines) and _SEPARATOR.match(lines[i].strip()):  # the markup legend
        i += 1
        while i < len(lines) and not _SEPARATOR.match(lines[i].strip()):
            i += 1
        i += 1
    for line in lines[i:]:
        if line.startswith("底本：") or "［＃本文終わり］" in line:
            return
        yield line


def _header(text: str) -> list[str]:
    lines = []
    for line in text.split("\n"):
        if not line.strip():
            break
        lines.append(line.strip())
    return lines


def work_documents(text: str, *, min_length: int = 10, max_length: int = 200,
                   max_document_sentences: int = 60) -> Iterator[list[str]]:
    """Documents (lists of sentences) of one Aozora work's text."""
    doc: list[str] = []
    for line in _body_lines(text):
        if _HEADING.search(line):
            if doc:
                yield doc
            doc = []
            continue
        paragraph = _GAIJI.sub(_MISSING, line)
        for mark in _REPEAT_MARKS:
            paragraph = paragraph.replace(mark, _MISSING)
        paragraph = _RUBY.sub("", _NOTE.sub("", paragraph)).replace("｜", "")
        for sentence in split_sentences(paragraph.strip()):
            if _MISSING in sentence or not (min_length <= len(sentence) <= max_length):
                continue
            doc.append(sentence)
        if len(doc) >= max_document_sentences:
            yield doc
            doc = []
    if doc:
        yield doc


def usable_work(text: str) -> bool:
    """Not a translation and no Creative Commons notice: plainly public domain."""
    if any(line.endswith("訳") or line.endswith("譯") for line in _header(text)[1:]):
        return False
    return "クリエイティブ・コモンズ" not in text and "Creative Commons" not in text


def _works(cards_root: str, author_ids: list[str]) -> Iterator[str]:
    """Work files, taking one work from each author in turn (variety early on)."""
    per_author = []
    for author in author_ids:
        directory = os.path.join(cards_root, "cards", author, "files")
        if not os.path.isdir(directory):
            raise BadInput(f"{directory}: no such directory (is {cards_root} an aozorabunko_text checkout?)")
        files = sorted(os.path.join(dp, f) for dp, _d, fs in os.walk(directory) for f in fs if f.endswith(".txt"))
        per_author.append(files)
    for i in range(max(map(len, per_author), default=0)):
        for files in per_author:
            if i < len(files):
                yield files[i]


def aozora_documents(aozora_dir: str, *, authors: list[str] | None = None, min_length: int = 10,
                     max_length: int = 200, max_document_sentences: int = 60,
                     stats: dict | None = None) -> Iterator[tuple[str, list[str]]]:
    """(title, sentences) for each document of the public-domain works, authors in turn."""
    author_ids = list(authors or PUBLIC_DOMAIN_AUTHORS)
    unknown = [a for a in author_ids if a not in PUBLIC_DOMAIN_AUTHORS]
    if unknown:
        raise BadInput(f"authors={unknown}: not in the public-domain list {sorted(PUBLIC_DOMAIN_AUTHORS)}")
    stats = stats if stats is not None else {}
    stats.setdefault("works", 0)
    stats.setdefault("works_skipped", 0)
    for path in _works(aozora_dir, author_ids):
        with open(path, "rb") as f:
            text = f.read().decode("cp932", errors="replace").replace("\r\n", "\n")
        if "\ufffd" in text or not usable_work(text):
            stats["works_skipped"] += 1
            continue
        stats["works"] += 1
        header = _header(text)
        title = header[0] if header else os.path.basename(path)
        for k, doc in enumerate(work_documents(text, min_length=min_length, max_length=max_length,
                                               max_document_sentences=max_document_sentences), 1):
            yield (title if k == 1 else f"{title} ({k})"), doc


def build_aozora_corpus(aozora_dir: str, output_uri: str, *, sentences: int = 200_000,
                        authors: list[str] | None = None, min_length: int = 10,
                        max_length: int = 200, max_document_sentences: int = 60) -> dict:
    """Writes about ``sentences`` sentences (whole documents) of public-domain prose."""
    if sentences < 1:
        raise BadInput(f"sentences={sentences}: must be >= 1")
    storage.check_outputs([aozora_dir], files=[output_uri])
    progress = Progress("aozora corpus", "sentences", total=sentences)
    stats = {"works": 0, "works_skipped": 0, "documents": 0, "sentences": 0}
    docs = aozora_documents(aozora_dir, authors=authors, min_length=min_length, max_length=max_length,
                            max_document_sentences=max_document_sentences, stats=stats)
    with storage.open_write(output_uri, text=True) as out:
        for _title, doc in docs:
            doc = doc[: sentences - stats["sentences"]]
            out.write("\n".join(doc) + "\n\n")
            stats["documents"] += 1
            stats["sentences"] += len(doc)
            progress.add(len(doc))
            if stats["sentences"] >= sentences:
                break
    stats["seconds"] = round(progress.done(), 3)
    return stats

"""The bundled sample inputs (``pipelines/sample_data``), made from public-domain prose.

The local pipeline run needs the three recipe inputs in their real formats but
small: a CirrusSearch dump under a dated folder, a CC-100-style ``ja.txt.xz``
and a UniDic-style ``lex.csv``. Their text is Aozora Bunko prose (see
``components.corpus.aozora``); the lexicon rows are unidic-lite's own entries
(context ids, cost and features as MeCab reports them) for the words of that
text, plus single kana, ASCII and digit entries, so the alphabet step has a
meaningful alphabet to find.
"""

from __future__ import annotations

import collections
import itertools
import unicodedata

from components import storage
from components.corpus.aozora import aozora_documents
from components.corpus.cirrussearch import RULE_EXAMPLES, write_cirrussearch
from components.corpus.wiki import clean_page_text
from components.mecab import tagger_args

_LEXICON_FORMAT = r'-O "" -F "%m\t%phl,%phr,%c,%H\n" -U "%m\tUNK\n" -E "EOS\n"'


def _lexicon_tagger(mecab_dic: str):
    import fugashi

    return fugashi.GenericTagger(f"{tagger_args(mecab_dic)} {_LEXICON_FORMAT}")


def _csv_field(value: str) -> str:
    return f'"{value.replace(chr(34), chr(34) * 2)}"' if any(c in value for c in ',"') else value


def _whole_entry(tagger, text: str) -> tuple[str, str] | None:
    """(key, lex row) when ``text`` is exactly one dictionary word, else None."""
    lines = [line for line in tagger.parse(text).split("\n") if "\t" in line]
    if len(lines) != 1:
        return None
    surface, _, rest = lines[0].partition("\t")
    if surface != text or rest == "UNK":
        return None
    return f"{surface}\t{rest}", f"{_csv_field(surface)},{rest}"


def _single_character_entries(tagger) -> list[tuple[str, str]]:
    """Kana, ASCII and full-width symbol entries that are words by themselves."""
    chars = itertools.chain(range(0x3041, 0x3097), range(0x30A1, 0x30FB), [0x30FC], range(0x21, 0x7F),
                            range(0xFF01, 0xFF5F))
    return [e for c in chars if (e := _whole_entry(tagger, chr(c)))]


def _latin_entries(tagger) -> list[tuple[str, str]]:
    """Full-width abbreviations (ＣＤ, ｋｇ, ...) covering each Latin letter and digit.

    UniDic writes Latin letters and digits in full-width forms (NFKC makes them
    ASCII); single letters and digits are not words by themselves.
    """
    upper = [chr(c) for c in range(0xFF21, 0xFF3B)]
    lower = [chr(c) for c in range(0xFF41, 0xFF5B)]
    digits = [chr(c) for c in range(0xFF10, 0xFF1A)]
    candidates = itertools.chain(
        ("".join(p) for p in itertools.product(upper, repeat=2)),
        ("".join(p) for p in itertools.product(lower, repeat=2)),
        ("".join(p) for p in itertools.product(upper, repeat=3)),
        (d + u for d in digits for u in upper), (d + lw for d in digits for lw in lower),
        (u + d for u in upper for d in digits))
    wanted = set(upper + lower + digits)
    found = []
    for text in candidates:
        if not wanted & set(text):
            continue
        entry = _whole_entry(tagger, text)
        if entry:
            found.append(entry)
            wanted -= set(text)
        if not wanted:
            break
    return found


def lexicon_rows(texts: list[str], *, rows: int = 3000, mecab_dic: str = "unidic_lite") -> list[str]:
    """``lex.csv`` lines for the dictionary words of ``texts``.

    Every character that occurs in a dictionary word of the texts is covered;
    then the most frequent words fill up to ``rows``; then single kana, ASCII
    and digit entries are added.
    """
    tagger = _lexicon_tagger(mecab_dic)
    entries: dict[str, str] = {}
    freq: collections.Counter = collections.Counter()
    for text in texts:
        for line in tagger.parse(text).split("\n"):
            surface, _, rest = line.partition("\t")
            if not rest or rest == "UNK":
                continue
            key = f"{surface}\t{rest}"
            entries.setdefault(key, f"{_csv_field(surface)},{rest}")
            freq[key] += 1
    by_freq = [k for k, _n in freq.most_common()]
    chosen: dict[str, None] = {}
    covered: set[str] = set()
    for key in by_freq:  # most frequent word for each character first
        surface = key.split("\t", 1)[0]
        if not set(surface) <= covered:
            chosen[key] = None
            covered.update(surface)
    for key in by_freq:
        if len(chosen) >= rows:
            break
        chosen.setdefault(key, None)
    for key, row in _single_character_entries(tagger) + _latin_entries(tagger):
        entries.setdefault(key, row)
        chosen.setdefault(key, None)
    return [entries[k] for k in chosen]


def build_sample_bundle(aozora_dir: str, output_dir: str, *, wiki_pages: int = 300, cc100_lines: int = 3000,
                        lex_rows: int = 3000, date: str = "20240101") -> dict:
    """Writes ``cirrussearch/DATE/...json.gz``, ``cc100/ja.txt.xz`` and ``unidic/lex.csv``."""
    # Encyclopedia-like prose only: "…" (three sentence ends after NFKC) and
    # verse lines without a period are common in fiction, rare in Wikipedia.
    docs = ((title, kept) for title, doc in aozora_documents(aozora_dir, max_document_sentences=20)
            if (kept := [s for s in doc if "…" not in s and s.endswith(("。", "」"))]))
    wiki_docs = list(itertools.islice(docs, wiki_pages))
    cc100_docs, n = [], 0
    for _title, doc in docs:
        if n >= cc100_lines:
            break
        doc = doc[: cc100_lines - n]
        cc100_docs.append(doc)
        n += len(doc)
    wiki_uri = storage.join(output_dir, "cirrussearch", date, f"jawiki-{date}-cirrussearch-content.json.gz")
    write_cirrussearch(wiki_docs, wiki_uri, date=date, extra_pages=RULE_EXAMPLES)
    cc100_uri = storage.join(output_dir, "cc100", "ja.txt.xz")
    with storage.open_write(cc100_uri, text=True) as out:
        for doc in cc100_docs:
            out.write("\n".join(doc) + "\n\n")
    texts = [clean_page_text(" ".join(doc)) for _t, doc in wiki_docs]
    texts += [unicodedata.normalize("NFKC", " ".join(doc)) for doc in cc100_docs]
    rows = lexicon_rows(texts, rows=lex_rows)
    lex_uri = storage.join(output_dir, "unidic", "lex.csv")
    storage.write_text(lex_uri, "\n".join(rows) + "\n")
    return {"wiki_pages": len(wiki_docs) + len(RULE_EXAMPLES), "cc100_lines": n,
            "cc100_documents": len(cc100_docs), "lex_rows": len(rows),
            "files": [wiki_uri, cc100_uri, lex_uri]}

"""CirrusSearch-format dumps made from sentence corpora, for sample data and benchmarks.

A real ``jawiki-YYYYMMDD-cirrussearch-content.json.gz`` is gigabytes; the
bundled sample and the benchmark inputs are made here from real prose instead.
Pages get the fields a real dump line has, and the leftovers that the recipe's
cleaning rules exist for: footnote marks, ``[要出典]``-style notes, template
remnants, breadcrumbs, reference sections, ``\\displaystyle`` equations,
invisible characters and full-width digits. Deterministic for a seed.
"""

from __future__ import annotations

import json
import random
import unicodedata
from collections.abc import Iterable, Iterator

from components import storage
from components.progress import Progress

_NOTES = ["[要出典]", "[要ページ番号]", "[要検証]", "[リンク切れ]", "[どの?]", "[いつ?]", "[誰?]"]
_TEMPLATES = ["{{要出典範囲|date=2023年5月}}", "{{lang-en|Japanese literature}}", "{{Main|日本文学}}",
              "{{節スタブ}}", "{{仮リンク|作品集|en|Collected works}}"]
_PARENTS = ["日本の文学", "近代文学", "文学作品一覧", "日本の小説家", "随筆"]
_EQUATIONS = ["{\\displaystyle x^{2}+y^{2}=r^{2}}", "{\\displaystyle E=mc^{2}}",
              "{\\displaystyle \\sum _{k=1}^{n}k={\\frac {n(n+1)}{2}}}"]
_REFERENCES = ["出典は底本による。", "青空文庫による。 2023年閲覧。", "前掲書、12頁。", "同上。"]
_FULLWIDTH_DIGITS = str.maketrans("0123456789", "０１２３４５６７８９")

# (title, text) pages that exercise each cleaning rule, the sentence split and
# the filters of SPEC 6.1, including pages that keep nothing.
RULE_EXAMPLES: list[tuple[str, str]] = [
    ("空のページ", ""),
    ("短い記事", "短い。とても短い。"),
    ("見出しだけ", "概要 歴史 脚注"),
    ("数値の例", "円周率はおよそ3.14である。この値は1.5倍すると約4.71になる。"),
    ("脚注の例", "夏目漱石は日本の小説家である[1]。代表作に『吾輩は猫である』がある[2][3]。"
                 " 脚注 ^ 出典一の文献である。 ^ 出典二の文献である。"),
    ("要出典の例", "この記述には出典が必要である[要出典]。この記述にはページ番号が必要である[要ページ番号]。"
                   "どの作品かは明らかでない[どの?]。この外部リンクは切れている[リンク切れ]。"),
    ("テンプレートの例", "{{Infobox 作家|名前=夏目漱石}}夏目漱石は明治の文豪である。"
                         "{{lang|en|{{nihongo|Soseki}}}}英語では Natsume Soseki と書かれる。"),
    ("C++ (プログラミング言語)", "プログラミング言語 > C++ (プログラミング言語) C++は汎用のプログラミング言語である。"
                                  "多くの処理系が存在している。"),
    ("数式の例", "円の方程式は {\\displaystyle x^{2}+y^{2}=r^{2}} で表される。これは中心が原点にある円である。"),
    ("制御文字の例", "一行目の文章がここにある。\n二行目の\t文章がここにある。\u200b見えない文字を含む文章である。"),
    ("全角の例", "ＡＢＣは全角の英字で書かれている。１２３は全角の数字で書かれている。ｶﾀｶﾅは半角のカタカナである。"),
    ("英語の例", "This is an English sentence. Is it split here? Yes it is! Another sentence follows here."),
    ("長さの例", "一二三四五六七八九。一二三四五六七八。" + "あ" * 199 + "。" + "い" * 200 + "。"),
    ("句点のない例", "この文は句点で終わらないまま途切れている"),
    ("空白の例", "   前後に空白がある文章である。    複数の   空白が   ある文章である。   "),
]


def corpus_documents(corpus_uri: str) -> Iterator[tuple[str, list[str]]]:
    """(title, sentences) for each document of a corpus-format file."""
    doc: list[str] = []
    n = 0
    for _lineno, line in storage.iter_lines(corpus_uri):
        if line.strip():
            doc.append(line.strip())
        elif doc:
            n += 1
            yield f"文書{n}", doc
            doc = []
    if doc:
        yield f"文書{n + 1}", doc


def noisy_page_text(title: str, sentences: list[str], rng: random.Random) -> str:
    """A page's ``text`` field as a dump has it: prose plus Wikipedia leftovers."""
    parts = []
    if rng.random() < 0.15:
        parts.append(f"{rng.choice(_PARENTS)} > {title} ")
    footnote = 0
    for sentence in sentences:
        r = rng.random()
        if r < 0.15:
            footnote += 1
            sentence = f"{sentence}[{footnote}]"
        elif r < 0.20:
            sentence = sentence[:-1] + rng.choice(_NOTES) + sentence[-1:]
        elif r < 0.23:
            sentence = rng.choice(_TEMPLATES) + sentence
        elif r < 0.25:
            sentence = sentence.translate(_FULLWIDTH_DIGITS)
        elif r < 0.26:
            sentence = sentence + "\u200b"  # zero-width space: not printable, removed
        parts.append(sentence)
        if rng.random() < 0.02:
            parts.append(f"この式は {rng.choice(_EQUATIONS)} と書ける。")
    text = " ".join(parts).replace("\t", " ")
    if rng.random() < 0.5 and footnote:
        text += " 脚注 " + " ".join(f"^ {rng.choice(_REFERENCES)}" for _ in range(footnote))
    return text


def page_record(page_id: int, title: str, text: str, date: str) -> dict:
    """A page line with the usual CirrusSearch content-dump fields."""
    ts = f"{date[:4]}-{date[4:6]}-{date[6:8]}T00:00:00Z"
    first = text.split("。", 1)[0] + "。" if "。" in text else text
    return {
        "namespace": 0, "title": title, "timestamp": ts, "create_timestamp": "2005-01-01T00:00:00Z",
        "category": ["日本の文学作品"], "external_link": [], "text": text,
        "text_bytes": len(text.encode("utf-8")), "template": ["Template:Reflist"], "outgoing_link": [],
        "heading": ["脚注"], "opening_text": first, "auxiliary_text": [], "language": "ja", "wiki": "jawiki",
        "source_text": f"'''{title}'''\n\n{text}\n\n== 脚注 ==\n{{{{Reflist}}}}\n", "version": 1000000 + page_id,
        "version_type": "external", "wikibase_item": f"Q{page_id + 1000}", "incoming_links": page_id % 17,
        "popularity_score": 1e-8 * (page_id % 97), "display_title": None, "redirect": [],
        "content_model": "wikitext", "namespace_text": "", "page_id": page_id,
    }


def write_cirrussearch(documents: Iterable[tuple[str, list[str]]], output_uri: str, *, seed: int = 0,
                       date: str = "20240101", extra_pages: Iterable[tuple[str, str]] = ()) -> dict:
    """Writes index/page line pairs; ``extra_pages`` are (title, raw text) pages added as given."""
    rng = random.Random(seed)
    progress = Progress("cirrussearch dump", "pages")
    pages = 0
    with storage.open_write(output_uri) as out:
        def emit(title: str, text: str) -> None:
            nonlocal pages
            pages += 1
            out.write(json.dumps({"index": {"_type": "_doc", "_id": str(pages)}}).encode() + b"\n")
            out.write(json.dumps(page_record(pages, title, text, date), ensure_ascii=False).encode() + b"\n")
            progress.add()

        for title, raw_text in extra_pages:
            emit(title, raw_text)
        for title, sentences in documents:
            title = unicodedata.normalize("NFKC", title)  # as Wikipedia titles are written
            emit(title, noisy_page_text(title, sentences, rng))
    progress.done()
    return {"pages": pages}

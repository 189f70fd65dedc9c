"""``bertja resolve-sources``: concrete source URLs and content identity as JSON."""

from __future__ import annotations

import argparse
import json
import sys

from components import storage
from components.download.core import TransferFailed
from components.download.sources import (
    CC100_URL_TEMPLATE,
    CIRRUS_INDEX_URL,
    LATEST,
    UNIDIC_URL,
    resolve_sources,
)


def main(argv: list[str], prog: str = "bertja resolve-sources") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Resolve the Wikipedia dump date ('latest' = newest dated folder that holds "
                    "the content dump) and print the concrete URLs with their size, ETag, "
                    "Last-Modified and MD5 as JSON.")
    parser.add_argument("--wikipedia-dump-date", default=LATEST, metavar="YYYYMMDD|latest",
                        help="dump date (default: latest)")
    parser.add_argument("--cirrus-index-url", default=CIRRUS_INDEX_URL, metavar="U",
                        help="CirrusSearch dump index: an HTML listing, or a local/file:///gs:// "
                             f"directory of dated folders (default: {CIRRUS_INDEX_URL})")
    parser.add_argument("--cc100-url", default=None, metavar="U",
                        help=f"CC-100 file (default: {CC100_URL_TEMPLATE.format(lang='LANG')})")
    parser.add_argument("--unidic-url", default=UNIDIC_URL, metavar="U",
                        help=f"UniDic source zip (default: {UNIDIC_URL})")
    parser.add_argument("--vibrato-dict-url", default="", metavar="U",
                        help="vibrato system dictionary (.dic or .dic.zst; default: none)")
    parser.add_argument("--lang", default="ja", help="wiki language code (default: ja)")
    parser.add_argument("--output", metavar="FILE.json", help="also write the JSON here (any URI)")
    args = parser.parse_args(argv)
    try:
        result = resolve_sources(wikipedia_dump_date=args.wikipedia_dump_date,
                                 cirrus_index_url=args.cirrus_index_url, cc100_url=args.cc100_url,
                                 unidic_url=args.unidic_url, vibrato_dict_url=args.vibrato_dict_url,
                                 lang=args.lang)
    except TransferFailed as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    text = json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    if args.output:
        storage.write_text(args.output, text)
    sys.stdout.write(text)
    return 0

"""``bertja download URL OUTPUT``: one resumable, verified download (or one zip member)."""

from __future__ import annotations

import argparse
import json
import sys

from components.download.core import (
    DEFAULT_CHUNK_SIZE,
    TransferFailed,
    download,
    download_member,
)


def main(argv: list[str], prog: str = "bertja download") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Copy URL (https, http, gs://, file://, local path) to OUTPUT (local or gs://). "
                    "HTTP transfers resume from OUTPUT.part after an interruption; the output "
                    "appears only once its size and checksum are verified. Prints a JSON summary.")
    parser.add_argument("url")
    parser.add_argument("output")
    checksum = parser.add_mutually_exclusive_group()
    checksum.add_argument("--sha256", metavar="HEX", help="expected SHA-256 of the download")
    checksum.add_argument("--md5", metavar="HEX", help="expected MD5 of the download")
    parser.add_argument("--expected-size", type=int, metavar="N", help="expected size in bytes")
    parser.add_argument("--extract-member", metavar="NAME",
                        help="URL is a zip: write only the member whose path ends with NAME "
                             "(e.g. lex.csv) to OUTPUT; the checks apply to the zip")
    parser.add_argument("--max-retries", type=int, default=5,
                        help="retries without progress before giving up (default: 5)")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE,
                        help=f"bytes per read (default: {DEFAULT_CHUNK_SIZE})")
    args = parser.parse_args(argv)
    checks = {"sha256": args.sha256, "md5": args.md5, "expected_size": args.expected_size,
              "max_retries": args.max_retries, "chunk_size": args.chunk_size}
    try:
        if args.extract_member:
            stats = download_member(args.url, args.extract_member, args.output, **checks)
        else:
            stats = download(args.url, args.output, **checks)
    except TransferFailed as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(stats, indent=2, ensure_ascii=False))
    return 0

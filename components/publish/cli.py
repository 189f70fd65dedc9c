"""``bertja publish MODEL_DIR RELEASE_URI [--metrics FILE.json] [--model-name N] ...``."""

from __future__ import annotations

import argparse
import json

from components import storage
from components.publish.core import DEFAULT_LICENSE, publish_model


def main(argv: list[str], prog: str = "bertja publish") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Copy a converted model directory to a release location (local or gs://) with a "
                    "generated model card (README.md) and a manifest (bertja_release.json), all or nothing.")
    parser.add_argument("model_dir", help="converted model directory (bertja convert)")
    parser.add_argument("release_uri", help="release directory or gs:// prefix")
    parser.add_argument("--metrics", metavar="FILE.json", help="metrics.json from bertja evaluate")
    parser.add_argument("--model-name", help="name in the card (default: bert-base-japanese[-char] from the sizes)")
    parser.add_argument("--variant", help="variant line in the card (default: size and tokenizer type)")
    parser.add_argument("--sources", metavar="FILE.json",
                        help='training data sources, e.g. {"wikipedia": {"dump_date": "20240801"}, "cc-100": {...}}')
    parser.add_argument("--license", default=DEFAULT_LICENSE, help="model licence id (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing release")
    parser.add_argument("--jglue-table", metavar="FILE.md", help="jglue.md from bertja evaluate --jglue, for the card")
    args = parser.parse_args(argv)
    summary = publish_model(args.model_dir, args.release_uri, metrics=args.metrics, model_name=args.model_name,
                            variant=args.variant, sources=args.sources, license_id=args.license,
                            overwrite=args.overwrite,
                            jglue_table=storage.read_text(args.jglue_table) if args.jglue_table else None)
    print(json.dumps(summary, indent=2))
    return 0

"""``bertja convert CHECKPOINT OUTPUT_DIR --tokenizer-dir DIR``."""

from __future__ import annotations

import argparse
import json

from components import storage
from components.convert.convert import convert_checkpoint


def main(argv: list[str], prog: str = "bertja convert") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Convert a TF Model Garden BERT pretraining checkpoint into a Hugging Face "
                    "BertForPreTraining directory (config.json, model.safetensors, tokenizer files). "
                    "Local paths, file:// and gs:// URIs.")
    parser.add_argument("checkpoint", help="a checkpoint prefix (.../ckpt-20) or a model dir "
                                           "(its 'checkpoint' file names the latest)")
    parser.add_argument("output_dir", help="where the Hugging Face directory is written")
    parser.add_argument("--tokenizer-dir", required=True,
                        help="tokenizer directory (vocab.txt, tokenizer_config.json) the model was trained with")
    args = parser.parse_args(argv)
    storage.check_outputs([args.checkpoint, args.tokenizer_dir], dirs=[args.output_dir])
    summary = convert_checkpoint(args.checkpoint, args.output_dir, tokenizer_dir=args.tokenizer_dir)
    print(json.dumps(summary, indent=2))
    return 0

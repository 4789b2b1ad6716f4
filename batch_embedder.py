#!/usr/bin/env python3
"""Stage 2 of RhizomeML: embed conversations and PDF chunks into a searchable memory.

    python batch_embedder.py                          # conversations.json, conversations2.json, pdf_texts.json here
    python batch_embedder.py export.zip claude.json pdf_texts.json
    python batch_embedder.py --query "how do I split a hive?"
"""

import sys

from rhizome.config import parse_args
from rhizome.errors import run_main
from rhizome.log import setup_logging
from rhizome.memory.build import EmbedConfig, build_memory, print_summary
from rhizome.memory.store import Memory


def main(argv=None) -> int:
    return run_main(_main, argv)


def _main(argv) -> int:
    config, _ = parse_args(EmbedConfig, __doc__, argv)
    setup_logging(config.verbose)
    if config.query is not None:
        memory = Memory.load(config.output_dir)
        hits = memory.search(config.query, k=config.k)
        print(f"Top {len(hits)} of {len(memory)} memories for: {config.query!r}")
        for rank, hit in enumerate(hits, 1):
            text = " ".join(hit.text.split())
            print(f"\n{rank}. score {hit.score:.3f}  {hit.source_label()}\n   {text[:300]}{'…' if len(text) > 300 else ''}")
        return 0
    summary = build_memory(config)
    print_summary(summary, config)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Stage 5 of RhizomeML: the chat's settings and memory, from the terminal.

    python UCS_v3_4_1.py search "how do I split a hive?"          # memories the chat would use, with scores
    python UCS_v3_4_1.py search "bike chain" --k 3 --min-score 0.2
    python UCS_v3_4_1.py config                                   # effective settings and the adapter chosen
    python UCS_v3_4_1.py chat                                     # chat in the terminal (the page: gradio_chat_tts.py)
"""

import sys

from rhizome.chat.cli import add_command_arguments, run
from rhizome.chat.config import ChatConfig
from rhizome.chat.server import ServeError
from rhizome.config import parse_args
from rhizome.log import setup_logging
from rhizome.memory.embedder import ModelNotFoundError as EmbedderNotFoundError
from rhizome.memory.store import MemoryFilesError
from rhizome.train.model import ModelNotFoundError


def main(argv=None) -> int:
    config, args = parse_args(ChatConfig, __doc__, argv, extra=add_command_arguments)
    setup_logging(config.verbose)
    try:
        return run(config, args.command, args.query, stats=args.stats)
    except (MemoryFilesError, ModelNotFoundError, EmbedderNotFoundError, FileNotFoundError, ServeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

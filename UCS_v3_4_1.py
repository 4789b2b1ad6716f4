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
from rhizome.config import parse_args
from rhizome.errors import run_main
from rhizome.log import setup_logging


def main(argv=None) -> int:
    return run_main(_main, argv)


def _main(argv) -> int:
    config, args = parse_args(ChatConfig, __doc__, argv, extra=add_command_arguments)
    setup_logging(config.verbose)
    return run(config, args.command, args.query, stats=args.stats)


if __name__ == "__main__":
    sys.exit(main())

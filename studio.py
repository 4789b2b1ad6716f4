#!/usr/bin/env python3
"""The training studio: start, watch, stop, resume, compare and use fine-tuning runs in the browser.

    python studio.py                      # http://127.0.0.1:7861: the runs in this folder, a Train and a Chat tab
    RHIZOME_AUTH=me:secret python studio.py --host 0.0.0.0      # or --auth-file logins.txt

Runs are subprocesses of train_script.py in this folder, one at a time; they keep training when the page stops.
"""

import sys

from rhizome.chat.app import ChatPage, build_app
from rhizome.chat.server import check_command_line, launch
from rhizome.config import parse_args
from rhizome.errors import run_main
from rhizome.log import setup_logging
from rhizome.studio.chat import StudioChat
from rhizome.studio.config import StudioConfig
from rhizome.studio.page import StudioPage, build_studio, quiet_queue


def main(argv=None) -> int:
    return run_main(_main, argv)


def _main(argv) -> int:
    config, _ = parse_args(StudioConfig, __doc__, argv)
    setup_logging(config.verbose)
    chat_config = config.chat_config()
    check_command_line(chat_config, argv)
    chat = StudioChat(chat_config)
    chat_page = ChatPage(chat, status=chat.notes)
    page = StudioPage(".", chat, chat_page)
    app = build_studio(page, build_app(chat_page, title="Chat"), refresh_seconds=config.refresh_seconds)
    url, _ = launch(app, chat_config)
    quiet_queue(app)
    print(f"Studio: {url} (Ctrl+C to stop the page; a training run keeps going)")
    app.block_thread()  # until Ctrl+C
    return 0


if __name__ == "__main__":
    sys.exit(main())

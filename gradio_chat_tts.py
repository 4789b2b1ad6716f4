#!/usr/bin/env python3
"""Stage 5 of RhizomeML: a local web page to chat (typed or spoken) with your fine-tuned model and memories.

    python gradio_chat_tts.py                         # http://127.0.0.1:7860, newest adapter, memory in .
    python gradio_chat_tts.py --adapter none --tts none --stt none
    RHIZOME_AUTH=me:secret python gradio_chat_tts.py --host 0.0.0.0 --port 8080   # or --auth-file logins.txt
"""

import sys

from rhizome.chat.app import ChatPage, build_app
from rhizome.chat.config import ChatConfig
from rhizome.chat.server import check_command_line, describe_setup, launch, load_speech
from rhizome.chat.session import ChatSession
from rhizome.config import parse_args
from rhizome.errors import run_main
from rhizome.log import setup_logging


def main(argv=None) -> int:
    return run_main(_main, argv)


def _main(argv) -> int:
    config, _ = parse_args(ChatConfig, __doc__, argv)
    setup_logging(config.verbose)
    check_command_line(config, argv)
    session = ChatSession.from_config(config)
    stt, tts, notices = load_speech(config)
    status = describe_setup(session, stt, tts)
    print("\n".join(status + [f"Note: {notice.replace('**', '')}" for notice in notices]))
    page = ChatPage(session, stt, tts, notices=notices, status=status, voice=config.voice, speak=config.speak)
    app = build_app(page, temperature=config.temperature, max_new_tokens=config.max_new_tokens,
                    max_upload_mb=config.max_upload_mb)
    url, public_url = launch(app, config)
    print(f"Chat page: {url}" + (f" and {public_url} (public link, --share)" if public_url else "")
          + " (Ctrl+C to stop)")
    app.block_thread()  # until Ctrl+C
    return 0


if __name__ == "__main__":
    sys.exit(main())

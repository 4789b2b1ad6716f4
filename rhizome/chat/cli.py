"""``UCS_v3_4_1.py``: inspect the chat's memory and settings, or chat in the terminal.

    search "question"   the memories the chat would use for this message, with scores and sources
    config              the effective settings (defaults < --config FILE < flags, passwords left out), the login
                        and the adapter that would load
    chat                a plain terminal chat with the same model, memory and settings as the web page
"""

from __future__ import annotations

import json
import sys
import threading
import time

from rhizome.chat.config import ChatConfig, find_adapter
from rhizome.chat.retrieval import ChatMemory, estimate_tokens
from rhizome.chat.server import AUTH_ENV, load_logins
from rhizome.config import to_dict
from rhizome.log import get_logger
from rhizome.memory.store import Memory
from rhizome.train.model import resolve_model

log = get_logger(__name__)

COMMANDS = ("search", "config", "chat")


def add_command_arguments(parser) -> None:
    parser.add_argument("command", choices=COMMANDS, help="what to do (see above)")
    parser.add_argument("query", nargs="?", default=None, help="the question to search the memory for")
    parser.add_argument("--stats", action="store_true",
                        help="chat: after each reply print prompt_tokens=, ttft_ms= (from the message), decode_tok_s=, "
                             "engine=")


def _chat_tokenizer_counter(config: ChatConfig):
    """Count tokens as the chat would (its model's tokenizer); a character estimate when it cannot load."""
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(resolve_model(config.base_model))
        return lambda text: len(tokenizer.encode(text, add_special_tokens=False)), "the chat model's tokenizer"
    except Exception as exc:  # noqa: BLE001 - searching must work without the chat model
        log.warning("counting tokens as characters / 4: cannot load the tokenizer of %s (%s)", config.base_model, exc)
        return estimate_tokens, "an estimate of 4 characters a token"


def search(config: ChatConfig, query: str | None) -> int:
    if not query or not query.strip():
        print('error: say what to search for: python UCS_v3_4_1.py search "your question"', file=sys.stderr)
        return 2
    memory = Memory.load(config.memory_dir)
    count_tokens, counted_with = _chat_tokenizer_counter(config)
    chat_memory = ChatMemory(memory, config.memory_dir, count_tokens=count_tokens, **ChatMemory.settings(config))
    hits = chat_memory.retrieve(query)
    print(f"Memory: {len(memory):,} items. {len(hits)} used for {query!r} (k={config.k}, min score "
          f"{config.min_score:.2f}, diversity {config.diversity:.2f}, budget {config.context_tokens} tokens "
          f"counted with {counted_with}):")
    if not hits:
        print(f"  none scored {config.min_score:.2f} or more; try --min-score 0.1")
    for rank, hit in enumerate(hits, 1):
        text = " ".join(hit.text.split())
        print(f"\n{rank}. score {hit.score:.3f}  {hit.source_label()}\n   {text[:300]}{'…' if len(text) > 300 else ''}")
    return 0


def show_config(config: ChatConfig) -> int:
    settings = to_dict(config)
    # Printed settings get saved and reused with --config, and a screen is seen by others: no password in them.
    del settings["auth"]
    print(json.dumps(settings, indent=2, ensure_ascii=False))
    logins = load_logins(config)
    if logins is None:
        print(f"Login: none (set one with --auth-file or {AUTH_ENV} before serving beyond 127.0.0.1).")
    else:
        users, source = logins
        print(f"Login: user(s) {', '.join(sorted(users))} from {source} (passwords not shown).")
    _, why = find_adapter(config)
    print(why)
    return 0


def chat(config: ChatConfig, stats: bool = False) -> int:
    """Messages from the keyboard, or one per line from standard input when it is not a terminal (piped in): then
    only replies (and --stats lines) go to standard output, so a script can read them."""
    from rhizome.chat.session import ChatSession, format_sources

    interactive = sys.stdin.isatty()
    session = ChatSession.from_config(config)
    if interactive:
        print("\n".join(session.notes) + "\nType a message; an empty line or Ctrl+D quits, Ctrl+C stops a reply.")
    else:
        print("\n".join(session.notes), file=sys.stderr)
    history: list[dict] = []
    piped = (line.strip() for line in sys.stdin if line.strip())
    while True:
        try:
            message = input("\nyou> ").strip() if interactive else next(piped)
        except (EOFError, StopIteration):
            break
        if not message:
            break
        stop, reply, hits = threading.Event(), "", []
        started, first_token = time.perf_counter(), None
        if interactive:
            print("bot> ", end="", flush=True)
        try:
            for reply_so_far, hits in session.respond(message, history, stop_event=stop):
                if reply_so_far and first_token is None:
                    first_token = time.perf_counter() - started
                print(reply_so_far[len(reply):], end="", flush=True)
                reply = reply_so_far
        except KeyboardInterrupt:
            stop.set()
        print()
        if stats:
            done = session.model.last_stats
            ttft = f"{first_token * 1e3:.0f}" if first_token is not None else "nan"
            print(f"prompt_tokens={done.prompt_tokens} ttft_ms={ttft} decode_tok_s={done.decode_tokens_per_s:.1f} "
                  f"engine={session.model.engine.replace(' ', '-')}", flush=True)
        if hits and interactive:
            print("Memories used:\n" + format_sources(hits).replace("**", "").replace("\\", ""))
        history += [{"role": "user", "content": message}, {"role": "assistant", "content": reply}]
    session.wait_for_memory()
    return 0


def run(config: ChatConfig, command: str, query: str | None, stats: bool = False) -> int:
    if command == "search":
        return search(config, query)
    if command == "config":
        return show_config(config)
    return chat(config, stats)

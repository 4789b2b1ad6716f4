"""One chat: retrieve memories for a message, stream the model's reply, remember the finished turn.

    session = ChatSession.from_config(ChatConfig())
    for reply_so_far, hits in session.respond("How do I split a hive?", history=[]):
        ...
    print(format_sources(hits))

A session serves any number of conversations (browser tabs, a cleared chat): a conversation is named
by the session's start time and its first user message, so remembered turns of different conversations
never share ids, and memories from the conversation being answered (already in its history) are not
retrieved again.

Prompts across turns: each user message goes to the model with the memories retrieved for it (see
:func:`rhizome.chat.retrieval.build_messages`), and the session keeps, per conversation, the messages as the model
saw them. The next turn repeats them word for word, so the whole conversation so far is a prefix the engine has
already computed and only the new message with its memories is prefilled. A memory already in the conversation's
prompt is not put in again (the sources panel still lists it).
"""

from __future__ import annotations

import datetime
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

from rhizome.chat.config import ChatConfig, find_adapter
from rhizome.chat.llm import ChatEngine, load_chat_model
from rhizome.chat.retrieval import ChatMemory, memory_line, plain_text, turn_messages
from rhizome.log import get_logger
from rhizome.memory.store import Hit

log = get_logger(__name__)

TITLE_CHARS = 60
TEMPLATE_TOKENS_PER_MESSAGE = 8  # role header and end-of-turn markers the chat template adds
# Conversations whose prompts are kept (browser tabs, cleared chats); the oldest is forgotten first, and a
# forgotten one only costs its next turn a full prefill.
KEPT_CONVERSATIONS = 16


class ChatSession:
    def __init__(self, config: ChatConfig, model: ChatEngine, memory: ChatMemory, notes: list[str] | None = None,
                 prepare_next_turn: bool = True):
        self.config = config
        self.model = model
        self.memory = memory
        self.notes = list(notes or [])  # what was loaded and why, for the screen
        self.started = time.time()
        self._remembering: list[threading.Thread] = []
        # conversation id -> [(role, text as the page shows it, the messages the model saw for it)], one per message
        self._prompts: OrderedDict[str, list[tuple[str, str, list[dict]]]] = OrderedDict()
        self._prompts_lock = threading.Lock()
        # False where no conversation continues (one-question benchmarks): the engine then computes no prefix ahead.
        self.prepare_next_turn = prepare_next_turn

    @classmethod
    def from_config(cls, config: ChatConfig) -> ChatSession:
        adapter, why = find_adapter(config)
        model, engine = load_chat_model(config.base_model, adapter, engine=config.engine, force_cpu=config.force_cpu)
        memory = ChatMemory.from_config(config, count_tokens=model.count_tokens)
        return cls(config, model, memory, notes=[why, f"Model: {model.description}.", engine, memory.status])

    def conversation(self, history: list[dict], user_message: str) -> tuple[str, str, int]:
        """(id, title, turn number) of the conversation ``user_message`` continues."""
        first = next((plain_text(m.get("content")) for m in history if m.get("role") == "user"), user_message)
        digest = hashlib.sha1(first.encode("utf-8")).hexdigest()[:10]
        title = " ".join(first.split())
        if len(title) > TITLE_CHARS:
            title = title[:TITLE_CHARS - 1].rstrip() + "…"
        turn = sum(1 for m in history if m.get("role") == "user")
        return f"{int(self.started)}-{digest}", title, turn

    def fit_history(self, history: list[dict], fixed_tokens: int, max_new_tokens: int) -> list[dict]:
        """The most recent turns that fit the model's context next to the prompt's fixed part and the reply."""
        budget = self.model.context_length - max_new_tokens - fixed_tokens
        kept: list[dict] = []
        for message in reversed(history):
            cost = TEMPLATE_TOKENS_PER_MESSAGE + self.model.count_tokens(plain_text(message.get("content")))
            if cost > budget:
                break
            kept.append(message)
            budget -= cost
        kept.reverse()
        # A conversation shown to the model starts with a user turn (after its memories), as it did in training.
        while kept and kept[0].get("role") == "assistant":
            kept.pop(0)
        return kept

    def as_prompted(self, conversation_id: str, history: list[dict]) -> list[tuple[str, str, list[dict]]]:
        """(role, text as the page shows it, the messages the model saw for it) of each message of ``history``: as in
        this conversation's earlier prompts (a user message after its memories) while the page's history still
        matches them, as shown after the first message that does not (an edited or unknown history)."""
        with self._prompts_lock:
            seen = self._prompts.get(conversation_id, [])
        turns: list[tuple[str, str, list[dict]]] = []
        matching = True
        for message in history:
            role, text = message.get("role"), plain_text(message.get("content")).strip()
            if role not in ("user", "assistant") or not text:
                continue
            i = len(turns)
            matching = matching and i < len(seen) and seen[i][:2] == (role, text)
            turns.append((role, text, seen[i][2] if matching else [{"role": role, "content": text}]))
        return turns

    def respond(self, user_message: str, history: list[dict], stop_event: threading.Event | None = None,
                temperature: float | None = None, max_new_tokens: int | None = None,
                running: threading.Event | None = None) -> Iterator[tuple[str, list[Hit]]]:
        """Yield (reply so far, memories used) as the reply streams; remember the turn once it is complete. While
        ``running`` (if given) is clear, the model waits before its next token (``ChatEngine.stream``)."""
        config = self.config
        max_new_tokens = config.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        temperature = config.temperature if temperature is None else float(temperature)
        conversation_id, title, turn = self.conversation(history, user_message)
        hits = self.memory.retrieve(user_message, exclude_conversation=conversation_id)
        turns = self.as_prompted(conversation_id, history)
        earlier = [message for _, _, prompted in turns for message in prompted]
        given = "\n".join(m["content"] for m in earlier if m["role"] == "system")
        new_turn = turn_messages(user_message, [hit for hit in hits if memory_line(hit) not in given])
        system = [{"role": "system", "content": config.system_prompt.strip()}] if config.system_prompt.strip() else []
        fixed_tokens = sum(TEMPLATE_TOKENS_PER_MESSAGE + self.model.count_tokens(m["content"])
                           for m in system + new_turn)
        messages = system + self.fit_history(earlier, fixed_tokens, max_new_tokens) + new_turn
        yield "", hits
        reply = ""
        for delta in self.model.stream(messages, max_new_tokens=max_new_tokens, temperature=temperature,
                                       top_p=config.top_p, repetition_penalty=config.repetition_penalty,
                                       stop_event=stop_event, running=running):
            reply += delta
            yield reply, hits
        self.keep_prompt(conversation_id, turns, user_message, new_turn, reply)
        stopped = stop_event is not None and stop_event.is_set()
        # A reply the user cut short is not a finished turn: remembering it would teach later chats half answers.
        if config.remember and reply.strip() and not stopped:
            self.remember_later(user_message, reply.strip(), conversation_id=conversation_id,
                                conversation_title=title, turn=turn)

    def keep_prompt(self, conversation_id: str, turns: list[tuple[str, str, list[dict]]], user_message: str,
                    prompted: list[dict], reply: str) -> None:
        """Note the turn as the model saw it, for the next turn's prompt, and let the engine compute that prefix
        while the user reads the reply (``ChatEngine.prepare``)."""
        if not reply.strip():
            return  # the page shows a placeholder, not this turn: the next history will not match it
        turns = turns + [("user", user_message.strip(), prompted),
                         ("assistant", reply.strip(), [{"role": "assistant", "content": reply.strip()}])]
        with self._prompts_lock:
            self._prompts[conversation_id] = turns
            self._prompts.move_to_end(conversation_id)
            while len(self._prompts) > KEPT_CONVERSATIONS:
                self._prompts.popitem(last=False)
        if self.prepare_next_turn:
            system = self.config.system_prompt.strip()
            self.model.prepare(([{"role": "system", "content": system}] if system else [])
                               + [message for _, _, prompted in turns for message in prompted])

    def remember_later(self, user_message: str, reply: str, **turn) -> None:
        """Append the turn to the memory in the background: rewriting the memory files of a large memory takes
        about a second, which would otherwise hold up the end of the reply (and its speech)."""

        def remember() -> None:
            try:
                self.memory.remember(user_message, reply, **turn)
            except Exception:  # the reply was given; a memory that cannot be written is logged, not raised
                log.exception("could not remember this turn in %s", self.memory.folder)

        # Not a daemon: a turn being written when the program exits is finished first.
        thread = threading.Thread(target=remember, name="chat-remember")
        thread.start()
        self._remembering = [t for t in self._remembering if t.is_alive()] + [thread]

    def wait_for_memory(self, timeout: float | None = None) -> None:
        """Block until the turns being remembered are written (tests, a terminal chat about to exit)."""
        for thread in list(self._remembering):
            thread.join(timeout)


def _escape(text: str) -> str:
    text = " ".join(str(text).split())
    for char in "\\`*_[]<>#|":
        text = text.replace(char, "\\" + char)
    return text


def _date(timestamp) -> str | None:
    try:
        return f"{datetime.datetime.fromtimestamp(float(timestamp), datetime.timezone.utc):%Y-%m-%d}"
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def source_of(hit: Hit) -> str:
    """Where a memory came from, for a person: PDF file name and pages, or conversation title and date."""
    meta = hit.metadata
    if meta.get("source") == "pdf":
        name = Path(str(meta.get("file") or "document")).name  # never a folder path outside the project
        start, end = meta.get("page_start"), meta.get("page_end")
        if start is None:
            return f"**{_escape(name)}**"
        pages = f"p. {start}" if start == end or end is None else f"pp. {start}–{end}"
        return f"**{_escape(name)}**, {pages}"
    title = meta.get("conversation_title") or "untitled conversation"
    origin = {"chat": "this chat app", "chatgpt": "ChatGPT", "claude": "Claude"}.get(meta.get("source"))
    when = _date(meta.get("timestamp"))
    details = ", ".join(part for part in (origin, when, meta.get("role")) if part)
    return f"**{_escape(title)}**" + (f" ({_escape(details)})" if details else "")


def format_sources(hits: list[Hit]) -> str:
    """The memories used for a reply as a Markdown list: source, score and the start of the text."""
    lines = []
    for hit in hits:
        text = " ".join(hit.text.split())
        excerpt = text[:140] + ("…" if len(text) > 140 else "")
        lines.append(f"- {source_of(hit)}, score {hit.score:.2f}  \n  {_escape(excerpt)}")
    return "\n".join(lines)

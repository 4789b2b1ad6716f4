"""The studio's Chat tab: the model loads on the first message, and "chat with this adapter" swaps it.

The Train tab must open in a second, without loading a language model; the chat's session is built when it is
first needed, from the same :class:`~rhizome.chat.config.ChatConfig` the chat page uses (text only: the voice
engines stay on ``gradio_chat_tts.py``). It stands in for a :class:`~rhizome.chat.session.ChatSession` in
:class:`~rhizome.chat.app.ChatPage`, which calls ``respond`` and reads ``model``.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

from rhizome.chat.config import ChatConfig
from rhizome.chat.session import ChatSession


class StudioChat:
    def __init__(self, config: ChatConfig):
        self.config = config
        self._session: ChatSession | None = None
        self._lock = threading.Lock()

    @property
    def session(self) -> ChatSession:
        with self._lock:
            if self._session is None:
                self._session = ChatSession.from_config(self.config)
            return self._session

    @property
    def notes(self) -> list[str]:
        """What the chat runs on; before the first message, what it will load."""
        if self._session is None:
            return [f"The model loads with the first message (adapter: {self.config.adapter})."]
        return list(self._session.notes)

    @property
    def model(self):
        return self.session.model

    def respond(self, *args, **kwargs):
        return self.session.respond(*args, **kwargs)

    def use_adapter(self, adapter: Path, base_model: str | None) -> list[str]:
        """Chat with ``adapter`` (over the base it was trained on) from the next message on; returns the notes."""
        config = dataclasses.replace(self.config, adapter=str(adapter), base_model=base_model or self.config.base_model)
        session = ChatSession.from_config(config)
        with self._lock:
            self.config, self._session = config, session
        return list(session.notes)

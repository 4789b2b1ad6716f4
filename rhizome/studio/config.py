"""StudioConfig: the studio page's settings; serving and login work as the chat page's (same flags, same defaults
except the port, so both pages can run at once)."""

from __future__ import annotations

from dataclasses import dataclass

from rhizome.chat.config import ChatConfig
from rhizome.config import option
from rhizome.studio.page import REFRESH_SECONDS
from rhizome.train.config import DEFAULT_MODEL

CHAT_FLAGS = ("base_model", "memory_dir", "engine", "host", "port", "auth", "auth_file")


@dataclass
class StudioConfig:
    base_model: str = option(DEFAULT_MODEL, "the Chat tab's base model until you pick a run's adapter")
    memory_dir: str = option(".", "the Chat tab's memory (from batch_embedder.py)")
    engine: str = option("auto", "what runs the Chat tab's model (as gradio_chat_tts.py --engine)",
                         choices=["auto", "ct2", "torch"])
    host: str = option("127.0.0.1", "address the page binds to; 0.0.0.0 exposes it (and the training controls) to "
                                    "your network: give a login then")
    port: int = option(7861, "port of the page (the chat page's is 7860)")
    auth: str = option("", "require a login: user:password. Other users of this machine can read it in ps: "
                           "prefer --auth-file or the RHIZOME_AUTH environment variable")
    auth_file: str = option("", "require a login: a file of user:password lines (# starts a comment)")
    refresh_seconds: float = option(REFRESH_SECONDS, "how often the page rereads the run folders")
    verbose: bool = option(False, "debug logging")

    def chat_config(self) -> ChatConfig:
        """The Chat tab's settings: text only (the voice engines load slowly; gradio_chat_tts.py has them)."""
        return ChatConfig(**{name: getattr(self, name) for name in CHAT_FLAGS}, stt="none", tts="none", speak=False)

"""Conversation import: ChatGPT and Claude exports, custom JSON and chat JSONL -> :class:`Conversation` objects.

    from rhizome.ingest import iter_conversations, IngestReport
    report = IngestReport()
    for conversation in iter_conversations(["conversations.json", "claude-export.zip"], report):
        ...
    print(report.summary())

Each importer keeps only what a person saw in the chat window: the active
branch, user and assistant text; never system prompts, custom instructions,
tool traffic or reasoning. Large files are streamed one conversation at a time.
"""

from rhizome.ingest.records import Conversation, IngestReport, InputLimits, Message
from rhizome.ingest.sources import (
    DEFAULT_CONVERSATION_FILES, detect_format, iter_conversations, load_conversations, record_format,
)

__all__ = [
    "DEFAULT_CONVERSATION_FILES", "Conversation", "IngestReport", "InputLimits", "Message",
    "detect_format", "iter_conversations", "load_conversations", "record_format",
]

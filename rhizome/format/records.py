"""A training pair as it moves through the formatter's steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Pair:
    """One training example: context turns, a user prompt and the assistant reply that answers it."""

    id: str
    messages: list[dict[str, str]]  # [{"role": "system"|"user"|"assistant", "content": str}], ends with the reply
    source: str  # "chatgpt", "claude", "custom", "hf_chat" or "pdf"
    conversation_id: str  # for PDFs: the file, so one document never crosses splits
    refs: dict[str, Any] = field(default_factory=dict)  # title, file, page_start/end, timestamps, message ids
    themes: list[str] = field(default_factory=list)
    theme_weight: float = 1.0
    quality: float = 0.0
    quality_components: dict[str, float] = field(default_factory=dict)
    keyphrases: list[str] = field(default_factory=list)
    tfidf_terms: list[str] = field(default_factory=list)
    dedup_group: str | None = None  # id of the pair that survived this pair's near-duplicate group

    @property
    def prompt(self) -> str:
        """The user turn this pair answers (the last user message)."""
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")

    @property
    def reply(self) -> str:
        return self.messages[-1]["content"]

    @property
    def text(self) -> str:
        """Prompt and reply, what dedup embeds and themes are drawn from."""
        return f"{self.prompt}\n{self.reply}"

    def training_record(self) -> dict[str, Any]:
        """The line written to dataset_<split>.jsonl (TRL / datasets conversational format)."""
        return {
            "id": self.id, "messages": self.messages, "themes": self.themes,
            "theme_weight": round(self.theme_weight, 6), "quality": round(self.quality, 4),
            "source": self.source, "conversation_id": self.conversation_id,
        }

    def detailed_record(self) -> dict[str, Any]:
        """The line written to dataset_<split>_detailed.jsonl: everything known about the pair."""
        return {
            **self.training_record(), "quality_components": self.quality_components,
            "keyphrases": self.keyphrases, "tfidf_terms": self.tfidf_terms, "refs": self.refs,
            "dedup_group": self.dedup_group,
        }

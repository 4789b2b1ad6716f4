"""Step "preferences": the person's own choices -> ``dataset_preferences_<split>.jsonl`` (DPO pairs).

Mining rules, over the :class:`~rhizome.ingest.preferences.Alternative` replies the importers kept beside the
active branch (an abandoned reply is never in the supervised pairs):

- **regeneration**: chosen = the reply on the active branch, rejected = each reply regenerated away;
- **edit**: the reply the person continued from (after the edited prompt) vs the reply to the prompt before the
  edit, only when the two prompts are near-identical: a ``difflib`` ratio >= ``EDIT_SIMILARITY`` (0.9) of their
  normalised text (casefolded, punctuation dropped, whitespace collapsed), i.e. a typo or a word fixed. An edit
  that asks something else is a new question, not a judgement of the old reply (counted ``edit_prompt_changed``);
- **rating**: a thumbs up / down (ChatGPT ``message_feedback.json``, a rating field of a Claude message), joined
  by message id, decides the order of any regeneration or edit pair whose two replies are rated differently
  (up > unrated > down), even against the active branch; such a pair's kind is ``rating``. A rating on a reply
  that has no alternative cannot make a pair (DPO needs two replies) and is counted ``ratings_without_alternative``.

The prompt is the active branch up to the user turn, with the same context turns and system prompt as the
supervised pair of that turn (``rhizome.format.pairs``). Texts are cleaned and redacted as the supervised pairs
are; a pair is dropped (and counted) when its abandoned reply is junk, its chosen reply scores below the quality
threshold, or chosen and rejected are near-duplicates (``difflib`` ratio >= ``NEAR_DUPLICATE`` (0.9) of normalised
text: a regeneration that says the same thing teaches nothing). A pair takes the themes and theme weight of its
supervised pair, and goes to the split its conversation's supervised pairs went to (conversations with none left
are split among themselves, grouped by conversation), so a conversation never spans splits across the two files.

Records are TRL's conversational preference format plus our fields:
``{"id", "prompt": [messages], "chosen": [{"role": "assistant", ...}], "rejected": [...], "kind", "source",
"conversation_id", "pair_id", "themes", "theme_weight"}``.
"""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rhizome import atomic
from rhizome.format import clean as cleaning
from rhizome.format import pairs as pairing
from rhizome.format import quality, split
from rhizome.format.dedup import normalized_text
from rhizome.format.records import Pair
from rhizome.ingest.records import Conversation
from rhizome.redact import Redaction

EDIT_SIMILARITY = 0.9
NEAR_DUPLICATE = 0.9
KINDS = ("regeneration", "edit", "rating")
FILE_PATTERN = "dataset_preferences_{split}.jsonl"


@dataclass
class PreferencePair:
    id: str
    prompt: list[dict[str, str]]
    chosen: str
    rejected: str
    kind: str
    source: str
    conversation_id: str
    pair_id: str  # the supervised pair of the same user turn
    themes: list[str] = field(default_factory=list)
    theme_weight: float = 1.0

    def record(self) -> dict[str, Any]:
        return {"id": self.id, "prompt": self.prompt, "chosen": [{"role": "assistant", "content": self.chosen}],
                "rejected": [{"role": "assistant", "content": self.rejected}], "kind": self.kind,
                "source": self.source, "conversation_id": self.conversation_id, "pair_id": self.pair_id,
                "themes": self.themes, "theme_weight": round(self.theme_weight, 6)}


@dataclass
class PreferenceStats:
    alternatives: Counter = field(default_factory=Counter)  # abandoned replies found, by regeneration / edit
    mined: Counter = field(default_factory=Counter)  # pairs made, by kind
    dropped: Counter = field(default_factory=Counter)  # by reason
    ratings: int = 0  # thumbs up / down known for this run's messages
    ratings_used: int = 0
    ratings_without_alternative: int = 0
    splits: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> kind -> pairs written

    def as_dict(self) -> dict[str, Any]:
        return {"alternatives": dict(sorted(self.alternatives.items())), "mined": dict(sorted(self.mined.items())),
                "dropped": dict(sorted(self.dropped.items())), "ratings": self.ratings,
                "ratings_used": self.ratings_used, "ratings_without_alternative": self.ratings_without_alternative,
                "kept": sum(sum(kinds.values()) for kinds in self.splits.values()), "splits": self.splits}


def similarity(a: str, b: str) -> float:
    """difflib's ratio of the two texts after ``normalized_text``; the cheap upper bounds first."""
    a, b = normalized_text(a), normalized_text(b)
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    if matcher.real_quick_ratio() < min(EDIT_SIMILARITY, NEAR_DUPLICATE):
        return matcher.real_quick_ratio()
    return matcher.ratio()


def mine(conversation: Conversation, ratings: dict[str, int], stats: PreferenceStats, *,
         context_turns: int = pairing.DEFAULT_CONTEXT_TURNS, system_prompt: str | None = None,
         redaction: Redaction = Redaction(), clean_stats: cleaning.CleanStats | None = None,
         quality_threshold: float = quality.DEFAULT_THRESHOLD) -> list[PreferencePair]:
    """The preference pairs of one cleaned conversation, as the module docstring says."""
    rated = {m.id for m in conversation.messages if m.role == "assistant" and m.id in ratings}
    if not conversation.alternatives:
        stats.ratings_without_alternative += len(rated)
        return []
    by_user_id = {}
    for pair in pairing.pairs_from_conversation(conversation, context_turns, system_prompt):
        for message_id in pair.refs["user_message_ids"]:
            by_user_id[message_id] = pair
    with_alternative = {i for a in conversation.alternatives if a.anchor_id in by_user_id
                        for i in by_user_id[a.anchor_id].refs["assistant_message_ids"]}
    stats.ratings_without_alternative += len(rated - with_alternative)
    rated_used: set[str] = set()
    found = []
    for number, alternative in enumerate(conversation.alternatives):
        stats.alternatives[alternative.kind] += 1
        pair = by_user_id.get(alternative.anchor_id)
        if pair is None:
            stats.dropped["prompt_dropped_in_cleaning"] += 1
            continue
        if alternative.kind == "edit":
            prompt = cleaning.normalise_and_redact(alternative.prompt or "", clean_stats, redaction)
            if similarity(prompt, pair.prompt) < EDIT_SIMILARITY:
                stats.dropped["edit_prompt_changed"] += 1
                continue
        abandoned = cleaning.normalise_and_redact(alternative.reply.text, clean_stats, redaction)
        if cleaning.junk_reason(abandoned) is not None:
            stats.dropped["junk"] += 1
            continue
        active_ids = pair.refs["assistant_message_ids"]
        active_rating = next((ratings[i] for i in active_ids if i in ratings), 0)
        abandoned_rating = ratings.get(alternative.reply.id, 0)
        chosen, rejected, kind = pair.reply, abandoned, alternative.kind
        if abandoned_rating != active_rating:
            kind = "rating"
            rated_used.update(i for i in (*active_ids, alternative.reply.id) if i in ratings)
            if abandoned_rating > active_rating:
                chosen, rejected = abandoned, pair.reply
        if quality.score_pair(Pair(pair.id, pair.messages[:-1] + [{"role": "assistant", "content": chosen}],
                                   pair.source, pair.conversation_id))[0] < quality_threshold:
            stats.dropped["low_quality"] += 1
            continue
        if similarity(chosen, rejected) >= NEAR_DUPLICATE:
            stats.dropped["near_duplicate"] += 1
            continue
        stats.mined[kind] += 1
        found.append(PreferencePair(f"{pair.id}:{kind}:{number}", pair.messages[:-1], chosen, rejected, kind,
                                    pair.source, pair.conversation_id, pair.id))
    stats.ratings_used += len(rated_used)
    return found


def take_themes(preferences: list[PreferencePair], pairs: list[Pair]) -> None:
    """Each preference pair gets the themes and weight of its supervised pair, when that one was kept."""
    by_id = {p.id: p for p in pairs}
    for preference in preferences:
        pair = by_id.get(preference.pair_id)
        if pair is not None:
            preference.themes, preference.theme_weight = list(pair.themes), pair.theme_weight


def split_like(preferences: list[PreferencePair], splits: dict[str, list[Pair]],
               ratios: tuple[float, float, float], seed: int) -> dict[str, list[PreferencePair]]:
    """Each preference pair into its conversation's split; pairs of conversations without one, grouped by conversation."""
    split_of = {(p.source, p.conversation_id): name for name, members in splits.items() for p in members}
    result: dict[str, list[PreferencePair]] = {name: [] for name in split.SPLITS}
    orphans = []
    for preference in preferences:
        name = split_of.get((preference.source, preference.conversation_id))
        if name is None:
            orphans.append(preference)
        else:
            result[name].append(preference)
    if orphans:
        proxies = [Pair(p.id, [], p.source, p.conversation_id, themes=p.themes) for p in orphans]
        by_id = {p.id: p for p in orphans}
        for name, members in split.split_pairs(proxies, ratios, seed).items():
            result[name].extend(by_id[p.id] for p in members)
    return result


def write(out: Path, splits: dict[str, list[PreferencePair]]) -> int:
    """The preference files, or, when there is no pair, none (stale ones from an earlier run removed)."""
    if not any(splits.values()):
        for name in split.SPLITS:
            (out / FILE_PATTERN.format(split=name)).unlink(missing_ok=True)
        return 0
    for name in split.SPLITS:
        atomic.write_jsonl(out / FILE_PATTERN.format(split=name), (p.record() for p in splits.get(name, [])))
    return len(split.SPLITS)

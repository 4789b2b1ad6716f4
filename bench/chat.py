"""The chat's latency budget, measured side by side in one run.

1. Retrieval: p50/p95 of ChatMemory.retrieve (FAISS search over build_index's index, score threshold,
   MMR re-ranking, token budget counted with SmolLM2's tokenizer) at 1k, 10k and 100k memories of
   synthetic unit-norm 384-d vectors clustered like sentence embeddings; the query embedding (the shipped
   all-MiniLM-L6-v2) is timed on its own. Goal: p95 < 20 ms at 100k.
2. Generation with the shipped SmolLM2-135M-Instruct, greedy, on the same prompts with and without
   retrieval from the demo memory (alternating, so load on a shared machine hits both alike): time to
   first token (from the user's message, so retrieval and the longer prompt are both in it) and decode
   tokens/s, at two memory token budgets. Goal: retrieval adds <= 20% to time to first token; the
   lookup (embedding, search, MMR) is also timed alone, apart from the longer prompt's prefill.
3. Speech: real-time factors (processing seconds / audio seconds) of Kokoro TTS and Whisper tiny.en STT.

    python bench/chat.py [--sizes 1000 10000 100000] [--queries 200] [--prompts 6] [--threads N]
                         [--skip-llm] [--skip-speech]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from index import clustered  # bench/index.py, beside this script

from rhizome.chat.config import ChatConfig  # noqa: E402
from rhizome.chat.retrieval import ChatMemory  # noqa: E402
from rhizome.memory.index import build_index, describe  # noqa: E402
from rhizome.memory.store import Memory  # noqa: E402

PROMPTS = [
    "What should I check on the first spring inspection of my hive?",
    "Why does my bike chain skip on the big cog?",
    "How warm should the fruiting room be for oyster mushrooms?",
    "How do I get honey out of the frames without an extractor?",
    "Which plants give bees pollen early in the year?",
    "How often should I replace a steel bike's chain?",
    "What substrate works best for growing oyster mushrooms at home?",
    "When do colonies swarm, and how can I prevent it?",
]
SPEECH_TEXT = ("The first spring inspection should be short. Check for eggs and a laying queen, look at the "
               "stores, and close the hive again before the brood gets cold.")


class PrecomputedQueries(Memory):
    """A Memory whose query embedding is looked up, so retrieval is timed without the embedder."""

    def __init__(self, *args, queries: dict[str, np.ndarray], **kwargs):
        super().__init__(*args, **kwargs)
        self.queries = queries

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.queries[t] for t in texts])


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.asarray(seconds) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def bench_retrieval(sizes: list[int], n_queries: int, count_tokens) -> None:
    rng = np.random.default_rng(0)
    config = ChatConfig()
    print(f"\nRetrieval (k={config.k}, min score {config.min_score}, MMR lambda {config.diversity}, "
          f"{config.context_tokens}-token budget), {n_queries} queries each")
    print(f"{'memories':>9} {'index':<34} {'build s':>8} {'p50 ms':>7} {'p95 ms':>7} {'hits/q':>7} {'p95 goal':>9}")
    for n in sizes:
        data = clustered(n + n_queries, 384, rng)
        corpus, queries = data[:n], data[n:]
        metadata = [{"text": f"memory {i}: " + "a sentence of about the usual length, " * 6, "source": "custom",
                     "conversation_title": f"conversation {i // 10}", "role": "user"} for i in range(n)]
        start = time.perf_counter()
        index = build_index(corpus)
        build_s = time.perf_counter() - start
        memory = PrecomputedQueries(corpus, metadata, index, {"embedding_model": "synthetic"},
                                    queries={f"q{i}": q for i, q in enumerate(queries)})
        chat_memory = ChatMemory(memory, None, count_tokens=count_tokens, **ChatMemory.settings(config))
        for i in range(min(10, n_queries)):  # warm-up: first searches touch cold pages
            chat_memory.retrieve(f"q{i}")
        times, hits = [], 0
        for i in range(n_queries):
            start = time.perf_counter()
            found = chat_memory.retrieve(f"q{i}")
            times.append(time.perf_counter() - start)
            hits += len(found)
        p50, p95 = percentiles(times)
        print(f"{n:>9} {describe(index):<34} {build_s:>8.1f} {p50:>7.2f} {p95:>7.2f} {hits / n_queries:>7.1f} "
              f"{'ok' if p95 < 20 else 'MISSED':>9}")


def bench_query_embedding(n_queries: int) -> None:
    from rhizome.memory.embedder import DEFAULT_EMBEDDING_MODEL, load_embedder

    model = load_embedder(DEFAULT_EMBEDDING_MODEL)
    texts = [PROMPTS[i % len(PROMPTS)] + f" ({i})" for i in range(n_queries)]
    model.encode(texts[:5], normalize_embeddings=True, show_progress_bar=False)
    times = []
    for text in texts:
        start = time.perf_counter()
        model.encode([text], normalize_embeddings=True, show_progress_bar=False)
        times.append(time.perf_counter() - start)
    p50, p95 = percentiles(times)
    print(f"Query embedding ({DEFAULT_EMBEDDING_MODEL}, one message): p50 {p50:.2f} ms, p95 {p95:.2f} ms")


def first_token_run(session, prompt: str, max_new_tokens: int) -> tuple[float, float, int, int]:
    """(seconds to the first token from the user's message, decode tokens/s, prompt tokens, memories used)."""
    start = time.perf_counter()
    first, hits = None, []
    for reply, hits in session.respond(prompt, [], temperature=0.0, max_new_tokens=max_new_tokens):
        if reply and first is None:
            first = time.perf_counter() - start
    stats = session.model.last_stats
    decode_s = stats.seconds - (stats.first_token_s or 0.0)
    rate = (stats.new_tokens - 1) / decode_s if stats.new_tokens > 1 and decode_s > 0 else 0.0
    return first or float("nan"), rate, stats.prompt_tokens, len(hits)


def bench_generation(memory_dir: str, n_prompts: int, max_new_tokens: int, budgets: list[int]) -> None:
    from rhizome.chat.llm import ChatModel
    from rhizome.chat.session import ChatSession

    model = ChatModel.load(ChatConfig().base_model, None, device="cpu")
    variants = {"no retrieval": ChatConfig(memory_dir=memory_dir, remember=False, k=0)}
    for budget in budgets:
        variants[f"retrieval, {budget} tok"] = ChatConfig(memory_dir=memory_dir, remember=False,
                                                          context_tokens=budget)
    sessions = {name: ChatSession(config, model, ChatMemory.from_config(config, count_tokens=model.count_tokens))
                for name, config in variants.items()}
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n_prompts)]
    for session in sessions.values():  # warm-up: the first generate and the embedder's first call are slow
        first_token_run(session, prompts[0], 4)
    results = {name: [] for name in sessions}
    lookups = []
    for prompt in prompts:
        for name, session in sessions.items():  # alternating, so a busy moment hits every variant alike
            results[name].append(first_token_run(session, prompt, max_new_tokens))
        start = time.perf_counter()
        sessions[list(sessions)[-1]].memory.retrieve(prompt)
        lookups.append(time.perf_counter() - start)
    baseline = statistics.median(r[0] for r in results["no retrieval"])
    print(f"\nGeneration: {model.description}, greedy, {max_new_tokens} new tokens, {n_prompts} prompts, memory "
          f"{memory_dir} ({len(sessions[list(sessions)[-1]].memory)} items); default budget "
          f"{ChatConfig().context_tokens} tokens")
    print(f"{'':<22} {'TTFT p50 ms':>12} {'vs none':>8} {'decode tok/s':>13} {'prompt tok':>11} {'memories':>9}")
    for name, rows in results.items():
        ttft = statistics.median(r[0] for r in rows)
        print(f"{name:<22} {ttft * 1e3:>12.0f} {ttft / baseline:>7.2f}x {statistics.median(r[1] for r in rows):>13.1f} "
              f"{statistics.mean(r[2] for r in rows):>11.0f} {statistics.mean(r[3] for r in rows):>9.1f}")
    lookup = statistics.median(lookups)
    print(f"Retrieval lookup alone (embed the message, search, MMR, budget): p50 {lookup * 1e3:.1f} ms = "
          f"{100 * lookup / baseline:.0f}% of the no-retrieval TTFT (goal <= 20%: "
          f"{'ok' if lookup / baseline <= 0.2 else 'MISSED'}); the rest is the prefill of the longer prompt")


def bench_speech() -> None:
    from rhizome.chat.stt import load_stt
    from rhizome.chat.tts import load_tts

    tts, stt = load_tts("kokoro"), load_stt("whisper")
    tts.speak("Warm up.")
    start = time.perf_counter()
    rate, samples = tts.speak(SPEECH_TEXT)
    tts_s = time.perf_counter() - start
    audio_s = len(samples) / rate
    stt.transcribe((rate, samples))
    start = time.perf_counter()
    heard = stt.transcribe((rate, samples))
    stt_s = time.perf_counter() - start
    print(f"\nSpeech on {audio_s:.1f} s of audio (real-time factor = processing s / audio s; < 1 is faster than "
          "real time)")
    print(f"  TTS {tts.name}: {tts_s:.2f} s, RTF {tts_s / audio_s:.2f}")
    print(f"  STT {stt.name}: {stt_s:.2f} s, RTF {stt_s / audio_s:.2f}")
    print(f"  heard: {heard}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--memory-dir", default=str(ROOT), help="real memory for the generation comparison")
    parser.add_argument("--budgets", type=int, nargs="+", default=[256, ChatConfig().context_tokens],
                        help="memory token budgets (--context-tokens) compared against no retrieval")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0 = physical cores, as the chat uses); on a machine shared with "
                             "other work, 1 thread suffers far less from waiting on preempted threads")
    parser.add_argument("--skip-llm", action="store_true")
    parser.add_argument("--skip-speech", action="store_true")
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    from rhizome.device import physical_cores

    torch.set_num_threads(args.threads or physical_cores())
    print(f"torch CPU threads: {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")

    from rhizome.train.model import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(ChatConfig().base_model))
    bench_retrieval(args.sizes, args.queries, lambda text: len(tokenizer.encode(text, add_special_tokens=False)))
    bench_query_embedding(args.queries)
    if not args.skip_llm:
        bench_generation(args.memory_dir, args.prompts, args.max_new_tokens, args.budgets)
    if not args.skip_speech:
        bench_speech()


if __name__ == "__main__":
    main()

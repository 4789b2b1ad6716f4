"""The chat model on ONNX Runtime GenAI: 4-bit weights on a CPU, the same streaming interface as ChatModel.

Why: decoding a small model on a CPU is bound by the bytes of weights read per token. CTranslate2 (the other fast
engine, :mod:`rhizome.chat.engine_ct2`) has int8 at best on a CPU; ONNX Runtime's ``MatMulNBits`` reads 4-bit
weights (the same budget as llama.cpp's Q4 GGUFs) or 8-bit ones (the default: int4 costs too much fidelity on the shipped
model). bench/chat.py measures the engines and variants side by side.

Conversion: ONNX Runtime GenAI's model builder (``onnxruntime_genai.models.builder``, run in a child process so
its imports and output stay out of the chat's) turns the base, with the adapter merged in fp32, into an ONNX
model with int8 weights; cached by :mod:`rhizome.chat.conversion` beside the adapter (``final.ort-int8/``) or in
the models cache, rebuilt when the adapter, the base or the builder's version changes.

Decoding: each step feeds one token (``Generator.append_tokens``) and picks the next from the returned logits here,
with transformers' rules for repetition penalty, temperature and top-p, so every engine samples alike. The text is
detokenised incrementally as the CTranslate2 engine does it. A set stop event or the caller closing the iterator
ends decoding within one token.

Prefix reuse: the generator of the last reply is kept with the token ids it holds (the prompt and the reply's
tokens). The next prompt is compared with them, the generator is rewound (``rewind_to``) to the longest common
prefix and only what follows is prefilled: the same tokens attended to as a full prefill, from where they differ
at worst.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from rhizome.chat import conversion
from rhizome.chat.engine_ct2 import _TextCollector, end_token_ids
from rhizome.chat.llm import ChatEngine, GenerationStats, wait_to_run
from rhizome.device import physical_cores
from rhizome.log import get_logger
from rhizome.train.model import ModelNotFoundError, resolve_model

log = get_logger(__name__)

KEY_FILE = "rhizome_ort.json"
# Variants: (the builder's precision, its options). accuracy_level 4 multiplies the int4/int8 weights with
# int8-quantised activations (MatMulNBits' fast path on a CPU), 1 with fp32 ones; block_size: weights per scale
# (32 as llama.cpp's Q4 formats). bench/chat.py compares them.
VARIANTS = {
    "int4": ("int4", {"accuracy_level": "4", "block_size": "32"}),
    "int4-b128": ("int4", {"accuracy_level": "4", "block_size": "128"}),
    "int4-acc1": ("int4", {"accuracy_level": "1", "block_size": "32"}),
    "int4-asym": ("int4", {"accuracy_level": "4", "block_size": "32", "is_symmetric": "false",
                           "shared_embeddings": "false"}),
    "int8": ("int8", {"accuracy_level": "4", "block_size": "32"}),
    "fp32": ("fp32", {}),
}
# int8, not int4: on the shipped SmolLM2 (weights already rounded to Q4_1 once) int4 rounds them again and its
# test perplexity rose 33% (asymmetric int4: 18%); int8 stays within 1% and still decodes 2x CTranslate2 int8.
DEFAULT_VARIANT = "int8"
# Most tokens a conversation holds (prompt and reply). The runtime allocates the keys and values for all of them up
# front (fp32; SmolLM2-135M: 46 KB a token, 190 MB at 4096, 380 MB at its full 8192); the chat's history is fitted
# to this as to a model of that context length.
MAX_CONTEXT = 4096


class ORTUnsupportedError(RuntimeError):
    """ONNX Runtime GenAI is not installed or cannot convert this model; another engine can still run it."""


def _onnxruntime_genai():
    try:
        import onnxruntime_genai
    except ImportError as exc:
        raise ORTUnsupportedError("ONNX Runtime GenAI is not installed (pip install onnxruntime-genai onnx "
                                  "onnx-ir)") from exc
    return onnxruntime_genai


def _build(source: str, folder: Path, variant: str) -> None:
    """Run the model builder on a Hugging Face folder, offline; its last lines of output become the error."""
    precision, settings = VARIANTS[variant]
    options = [f"{key}={value}" for key, value in settings.items()]
    with tempfile.TemporaryDirectory(prefix=".ort-build-", dir=folder.parent) as cache:
        command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", source, "-o", str(folder),
                   "-p", precision, "-e", "cpu", "-c", cache] + (["--extra_options", *options] if options else [])
        done = subprocess.run(command, capture_output=True, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"})
    if done.returncode != 0 or not (folder / "genai_config.json").is_file():
        tail = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()][-3:]
        raise ORTUnsupportedError(f"ONNX Runtime GenAI's model builder cannot convert {source}: "
                                  + " / ".join(tail))


def converted_model(base_model: str, adapter: str | None, variant: str = DEFAULT_VARIANT) -> Path:
    """The ONNX Runtime GenAI folder for base (+ adapter merged), converting it first when missing or stale."""
    if variant not in VARIANTS:
        raise ValueError(f"ONNX Runtime GenAI variant {variant}: choose one of {', '.join(VARIANTS)}")
    version = f"{_onnxruntime_genai().__version__} {VARIANTS[variant]}"
    return conversion.converted_model(base_model, adapter, engine="ort", variant=variant, converter_version=version,
                                      key_file=KEY_FILE, convert=lambda source, folder: _build(source, folder, variant))


def next_token(logits: np.ndarray, seen: np.ndarray, *, temperature: float, top_p: float, repetition_penalty: float,
               rng: np.random.Generator) -> int:
    """The next token from one position's logits, by transformers' rules: the repetition penalty on every token
    ``seen`` (a mask over the vocabulary), then greedy (temperature 0) or temperature and nucleus sampling."""
    scores = logits.astype(np.float64)
    if repetition_penalty != 1.0:
        penalised = scores[seen]
        scores[seen] = np.where(penalised < 0, penalised * repetition_penalty, penalised / repetition_penalty)
    if not temperature or temperature <= 0:
        return int(np.argmax(scores))
    scores = scores / temperature
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")
    ranked = probs[order]
    keep = np.cumsum(ranked) - ranked < top_p  # the fewest top tokens whose mass reaches top_p (at least one)
    keep[0] = True
    ranked = np.where(keep, ranked, 0.0)
    return int(order[rng.choice(len(ranked), p=ranked / ranked.sum())])


class ORTChatModel(ChatEngine):
    def __init__(self, model, tokenizer, description: str, *, context_length: int, vocab_size: int,
                 end_ids: list[int], engine: str):
        super().__init__(tokenizer, description, engine=engine, device="cpu")
        self._og = _onnxruntime_genai()
        self._model = model
        self._context_length = context_length
        self._vocab_size = vocab_size
        self.end_ids = end_ids
        self._rng = np.random.default_rng()
        self._generator = None  # the last reply's generator ...
        self._held: list[int] = []  # ... and the token ids whose keys and values it holds; both under the lock

    @classmethod
    def load(cls, base_model: str, adapter: str | None = None, variant: str = DEFAULT_VARIANT) -> ORTChatModel:
        from transformers import AutoConfig, AutoTokenizer

        og = _onnxruntime_genai()
        base_path = resolve_model(base_model)
        try:
            config = AutoConfig.from_pretrained(base_path)
            tokenizer = AutoTokenizer.from_pretrained(base_path)
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(
                f"cannot load chat model '{base_model}': {exc}\nPass --base-model with a local Hugging Face "
                "folder, a .gguf file or a model id already in your Hugging Face cache.") from exc
        head_size = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        if head_size % 16:  # known before converting: the runtime's attention kernel (GroupQueryAttention) refuses it
            raise ORTUnsupportedError(f"ONNX Runtime GenAI's attention needs a head size that is a multiple of 16; "
                                      f"{base_model} has {head_size}")
        folder = converted_model(base_model, adapter, variant)
        context_length = min(int(config.max_position_embeddings or 2048), MAX_CONTEXT)
        settings = og.Config(str(folder))
        # Workers that sleep between operators, one per physical core: spinning ones hold a core that the speech
        # models (Kokoro, Whisper) need while a reply is decoded (bench/chat.py --only threads).
        settings.overlay(json.dumps({
            "model": {"decoder": {"session_options": {"intra_op_num_threads": physical_cores(),
                                                      "session.intra_op.allow_spinning": "0"}}},
            "search": {"max_length": context_length}}))
        try:
            model = og.Model(settings)
            # Some shapes load but fail on the first step (head sizes not a multiple of 16): one step finds out
            # here, where another engine can still be chosen, and warms the session up.
            params = og.GeneratorParams(model)
            params.set_search_options(max_length=2)
            og.Generator(model, params).append_tokens([int(tokenizer.bos_token_id or 0)])
        except Exception as exc:  # noqa: BLE001 - the runtime raises a bare RuntimeError for any model it rejects
            raise ORTUnsupportedError(f"ONNX Runtime GenAI cannot run {folder}: {exc}") from exc
        parts = [f"{base_model} (ONNX Runtime GenAI {variant}, cpu)"]
        if adapter:
            parts.append(f"+ adapter {adapter} (merged, converted once into {folder})")
        note = cls.prepare_tokenizer(tokenizer)
        if note:
            parts.append(note)
        return cls(model, tokenizer, " ".join(parts), context_length=context_length,
                   vocab_size=int(config.vocab_size), end_ids=end_token_ids(base_path, config, tokenizer),
                   engine=f"ort {variant}")

    @property
    def context_length(self) -> int:
        return self._context_length

    def _generator_for(self, ids: list[int]) -> tuple[object, int]:
        """(a generator holding the longest prefix of ``ids`` that the last one held, its length), or a new one and
        0. At least the prompt's last token is left to run, since its logits pick the first new token. Called under
        the lock."""
        generator, held = self._generator, self._held
        self._generator, self._held = None, []  # taken: a failure mid-reply leaves no half-known state behind
        common = next((i for i, (a, b) in enumerate(zip(held, ids)) if a != b), min(len(held), len(ids)))
        common = min(common, len(ids) - 1)
        if generator is not None and common > 0:
            generator.rewind_to(common)
            return generator, common
        params = self._og.GeneratorParams(self._model)
        params.set_search_options(max_length=self._context_length)
        return self._og.Generator(self._model, params), 0

    def generate_ids(self, ids: list[int], *, max_new_tokens: int = 256, temperature: float = 0.7, top_p: float = 0.9,
                     repetition_penalty: float = 1.0, stop_event: threading.Event | None = None) -> Iterator[int]:
        """Yield the reply's token ids after the prompt ``ids``, up to and with the end token; ``last_stats`` says
        what it did once the iterator is finished or closed."""
        started = time.perf_counter()
        stats = GenerationStats(prompt_tokens=len(ids))
        budget = min(int(max_new_tokens), self._context_length - len(ids))
        seen = np.zeros(self._vocab_size, dtype=bool)
        seen[ids] = True
        with self._generate_lock:
            generator, stats.reused_tokens = self._generator_for(ids)
            held, consistent = list(ids), False
            try:
                generator.append_tokens(ids[stats.reused_tokens:])
                while stats.new_tokens < budget:
                    logits = generator.get_logits().reshape(-1)
                    token = next_token(logits, seen, temperature=temperature, top_p=top_p,
                                       repetition_penalty=repetition_penalty, rng=self._rng)
                    stats.new_tokens += 1
                    if stats.first_token_s is None:
                        stats.first_token_s = time.perf_counter() - started
                    yield token  # the end token too, as transformers' generate() gives it (special: no text)
                    if token in self.end_ids or stats.new_tokens >= budget or \
                            (stop_event is not None and stop_event.is_set()):
                        break
                    generator.append_tokens([token])
                    held.append(token)
                    seen[token] = True
                consistent = True
            except GeneratorExit:  # the caller stopped reading: what the generator holds is still known
                consistent = True
                raise
            finally:
                if consistent:
                    self._generator, self._held = generator, held
                stats.seconds = time.perf_counter() - started
                stats.stopped = stop_event is not None and stop_event.is_set()
                self.last_stats = stats

    def stream(self, messages: list[dict], *, max_new_tokens: int = 256, temperature: float = 0.7,
               top_p: float = 0.9, repetition_penalty: float = 1.0,
               stop_event: threading.Event | None = None, running: threading.Event | None = None) -> Iterator[str]:
        """Yield the reply's text in pieces as it is generated; ``temperature`` 0 means greedy."""
        ids = self.prompt_ids(messages)[0].tolist()
        text = _TextCollector(self.tokenizer)
        tokens = self.generate_ids(ids, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                   repetition_penalty=repetition_penalty, stop_event=stop_event)
        try:
            for token in tokens:
                yield from text.put(token)
                wait_to_run(running, stop_event)  # the next token is computed only once asked for
            yield from text.end()
        finally:
            tokens.close()

    def _log_softmax_rows(self, ids: list[int], first: int):
        """Yields, for each of ``ids[first:-1]``, the log-softmax over the vocabulary of the token after it.
        ``ids[:first + 1]`` is prefilled at once; the runtime returns only the last position's logits, so the rest
        go one token at a time."""
        params = self._og.GeneratorParams(self._model)
        params.set_search_options(max_length=len(ids))
        with self._generate_lock:
            generator = self._og.Generator(self._model, params)
            generator.append_tokens(ids[:first + 1])
            for i in range(first + 1, len(ids)):
                logits = generator.get_logits().reshape(-1).astype(np.float64)
                top = logits.max()
                yield logits - top - np.log(np.exp(logits - top).sum())
                if i < len(ids) - 1:
                    generator.append_tokens([ids[i]])

    def next_token_log_probs(self, ids: list[int], first: int) -> np.ndarray:
        """Log-probabilities over the vocabulary of the token after each of ``ids[first:-1]``: row i is the
        distribution of ``ids[first + i + 1]`` (the grounded-QA likelihood)."""
        return np.stack(list(self._log_softmax_rows(ids, first)))

    def log_probs(self, ids: list[int]) -> list[float]:
        """The log-probability of each token of ``ids`` after the first, given those before it (perplexity)."""
        return [float(row[token]) for row, token in zip(self._log_softmax_rows(ids, 0), ids[1:])]

"""The chat model on CTranslate2: int8 weights, a C++ decoding loop, the same streaming interface as ChatModel.

Why: decoding a small model in PyTorch is bound by per-token Python and kernel-launch overhead and by the
bytes of weights read per token (fp32: 4 bytes a weight). CTranslate2 (installed with faster-whisper) runs
the whole loop in C++ over int8 weights; bench/chat.py measures both side by side.

Conversion: the base (with the adapter merged in, in fp32, by :meth:`ChatModel.load`) is converted once with
CTranslate2's ``TransformersConverter`` and cached by :mod:`rhizome.chat.conversion`, next to the adapter
(``final.ct2-int8/`` beside ``final/``) or, for the base alone, in the models cache (``<models dir>/ct2/<name>``),
keyed by the adapter's files, the base's weight files, the quantisation and the CTranslate2 version.

Streaming: ``Generator.generate_tokens`` decodes in CTranslate2's own thread and yields each token; text is
detokenised incrementally by transformers' ``TextStreamer`` rules (the pieces join into exactly what
``tokenizer.decode`` gives for the whole reply). Closing the iterator, or a set stop event, ends decoding
within one token.

Prefix reuse: CTranslate2 keeps no KV cache between calls; what it has is ``static_prompt`` with
``cache_static_prompt``, which stores the decoder state after an exact token sequence and copies it into any later
call given the same sequence. It cannot extend a stored state, so the state of a conversation's next prefix is
computed whole. :meth:`CT2ChatModel.prepare` does that in the background as soon as a reply is finished (the
conversation so far is then known), and the next turn's prompt, found to start with a stored prefix, prefills only
its new tokens. The tokens are computed again, but while the user reads and answers, not while they wait. Stored
states are never freed by CTranslate2; past :data:`PREFIX_CACHE_TOKENS` of them the generator is loaded afresh.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import torch

from rhizome.chat import conversion
from rhizome.chat.llm import ChatEngine, GenerationStats, wait_to_run
from rhizome.device import physical_cores
from rhizome.log import get_logger
from rhizome.train.model import ModelNotFoundError, resolve_model

log = get_logger(__name__)

KEY_FILE = "rhizome_ct2.json"
# bench/chat.py: on the reference CPU int8 (int8 weights, fp32 activations) decodes fastest; float32 is 2x slower.
CPU_COMPUTE_TYPE = "int8"
# Tokens of stored prefix states before the generator is reloaded to free them (SmolLM2-135M: 46 KB a token of fp32
# keys and values, so 8192 tokens are about 380 MB; a few long conversations' worth).
PREFIX_CACHE_TOKENS = 8192


class CT2UnsupportedError(RuntimeError):
    """CTranslate2 is not installed or cannot convert this model; the PyTorch engine can still run it."""


def _ctranslate2():
    try:
        import ctranslate2
    except ImportError as exc:
        raise CT2UnsupportedError("CTranslate2 is not installed (pip install ctranslate2)") from exc
    return ctranslate2


def cache_folder(base_path: str, adapter: str | None, quantization: str) -> Path:
    return conversion.cache_folder(base_path, adapter, "ct2", quantization)


def _convert(source: str, folder: Path, quantization: str) -> None:
    ctranslate2 = _ctranslate2()
    try:
        ctranslate2.converters.TransformersConverter(source, low_cpu_mem_usage=True).convert(
            str(folder), quantization=quantization, force=True)
    except Exception as exc:  # noqa: BLE001 - the converter raises bare ValueError/NotImplementedError/KeyError
        raise CT2UnsupportedError(f"CTranslate2 cannot convert {source}: {type(exc).__name__}: {exc}") from exc


def converted_model(base_model: str, adapter: str | None, quantization: str = "int8") -> Path:
    """The CTranslate2 folder for base (+ adapter merged), converting it first when missing or stale."""
    return conversion.converted_model(
        base_model, adapter, engine="ct2", variant=quantization, converter_version=_ctranslate2().__version__,
        key_file=KEY_FILE, convert=lambda source, folder: _convert(source, folder, quantization))


def end_token_ids(base_path: str, config, tokenizer) -> list[int]:
    """The tokens that end a reply, as transformers' generate() takes them: the generation config's eos, else the
    model config's, else the tokenizer's."""
    from transformers import GenerationConfig

    try:
        end = GenerationConfig.from_pretrained(base_path).eos_token_id
    except OSError:
        end = None
    end = end if end is not None else config.eos_token_id if config.eos_token_id is not None \
        else tokenizer.eos_token_id
    return [int(i) for i in (end if isinstance(end, list) else [end]) if i is not None]


class _TextCollector:
    """transformers' incremental detokenisation (``TextStreamer``), handing text to the caller instead of stdout."""

    def __init__(self, tokenizer):
        from transformers import TextStreamer

        pieces: list[str] = []

        class Collector(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                if text:
                    pieces.append(text)

        self.pieces = pieces
        self.streamer = Collector(tokenizer, skip_special_tokens=True)

    def put(self, token_id: int) -> list[str]:
        self.streamer.put(torch.tensor([token_id]))
        return self._take()

    def end(self) -> list[str]:
        self.streamer.end()
        return self._take()

    def _take(self) -> list[str]:
        out = list(self.pieces)
        self.pieces.clear()
        return out


class CT2ChatModel(ChatEngine):
    def __init__(self, generator, tokenizer, description: str, *, context_length: int, end_ids: list[int],
                 engine: str, device: str = "cpu", reload=None):
        super().__init__(tokenizer, description, engine=engine, device=device)
        self.generator = generator
        self._context_length = context_length
        self.end_ids = end_ids
        self._reload = reload  # makes a fresh Generator, which drops every stored prefix state; None: never
        self._prefixes: OrderedDict[tuple[int, ...], None] = OrderedDict()  # stored states, guarded by the lock

    @classmethod
    def load(cls, base_model: str, adapter: str | None = None, device: str = "cpu",
             quantization: str | None = None) -> CT2ChatModel:
        """``quantization``: weights as converted and computed (int8, float32 ...); None = the fastest for ``device``."""
        from transformers import AutoConfig, AutoTokenizer

        ctranslate2 = _ctranslate2()
        base_path = resolve_model(base_model)
        try:
            config = AutoConfig.from_pretrained(base_path)
            tokenizer = AutoTokenizer.from_pretrained(base_path)
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(
                f"cannot load chat model '{base_model}': {exc}\nPass --base-model with a local Hugging Face "
                "folder, a .gguf file or a model id already in your Hugging Face cache.") from exc
        compute_type = quantization or (CPU_COMPUTE_TYPE if device == "cpu" else "int8_float16")
        folder = converted_model(base_model, adapter, compute_type)

        def load_generator():
            return ctranslate2.Generator(str(folder), device=device, compute_type=compute_type,
                                         intra_threads=physical_cores() if device == "cpu" else 0)

        end_ids = end_token_ids(base_path, config, tokenizer)
        parts = [f"{base_model} (CTranslate2 {compute_type}, {device})"]
        if adapter:
            parts.append(f"+ adapter {adapter} (merged, converted once into {folder})")
        note = cls.prepare_tokenizer(tokenizer)
        if note:
            parts.append(note)
        return cls(load_generator(), tokenizer, " ".join(parts),
                   context_length=int(config.max_position_embeddings or 2048), end_ids=end_ids,
                   engine=f"ct2 {compute_type}", device=device, reload=load_generator)

    @property
    def context_length(self) -> int:
        return self._context_length

    def prepare(self, messages: list[dict]) -> None:
        """Store the decoder state after ``messages`` (the conversation so far) in the background, for the next
        turn's prompt to start from (see the module's note)."""
        ids = tuple(self.prompt_ids(messages, add_generation_prompt=False)[0].tolist())
        if len(ids) < 2:
            return

        def store() -> None:
            with self._generate_lock:
                if ids in self._prefixes:
                    return
                try:
                    if self._reload is not None and sum(map(len, self._prefixes)) + len(ids) > PREFIX_CACHE_TOKENS:
                        self.generator, self._prefixes = self._reload(), OrderedDict()
                    tokens = self.tokenizer.convert_ids_to_tokens(list(ids))
                    # One step after the prefix is the least work that makes CTranslate2 compute and store it.
                    self.generator.generate_batch([tokens[-1:]], max_length=1, sampling_topk=1, static_prompt=tokens,
                                                  cache_static_prompt=True)
                except Exception:  # a prefix not stored only costs the next turn its full prefill
                    log.exception("could not compute the conversation's prefix ahead")
                    return
                self._prefixes[ids] = None

        self._preparing = threading.Thread(target=store, name="chat-prefix", daemon=True)
        self._preparing.start()

    def _stored_prefix(self, ids: list[int]) -> int:
        """Length of the longest stored prefix state that ``ids`` starts with (shorter than ``ids``: the prompt's
        last token must still be run); 0 if none. Called under the lock."""
        best = 0
        for prefix in self._prefixes:
            if best < len(prefix) < len(ids) and tuple(ids[:len(prefix)]) == prefix:
                best = len(prefix)
        return best

    def stream(self, messages: list[dict], *, max_new_tokens: int = 256, temperature: float = 0.7,
               top_p: float = 0.9, repetition_penalty: float = 1.0,
               stop_event: threading.Event | None = None, running: threading.Event | None = None) -> Iterator[str]:
        """Yield the reply's text in pieces as it is generated; ``temperature`` 0 means greedy."""
        started = time.perf_counter()
        ids = self.prompt_ids(messages)[0].tolist()
        sampling = ({"sampling_topk": 0, "sampling_topp": float(top_p), "sampling_temperature": float(temperature)}
                    if temperature and temperature > 0 else {"sampling_topk": 1})
        text = _TextCollector(self.tokenizer)
        stats = GenerationStats(prompt_tokens=len(ids))
        with self._generate_lock:
            stats.reused_tokens = self._stored_prefix(ids)
            tokens = self.tokenizer.convert_ids_to_tokens(ids)
            reuse = ({"static_prompt": tokens[:stats.reused_tokens], "cache_static_prompt": True}
                     if stats.reused_tokens else {})
            steps = self.generator.generate_tokens(
                tokens[stats.reused_tokens:], max_length=int(max_new_tokens),
                repetition_penalty=float(repetition_penalty), end_token=self.end_ids, **sampling, **reuse,
                # in CTranslate2's decoding thread, so waiting there holds the decoder itself, not only its output
                callback=lambda step: wait_to_run(running, stop_event))
            try:
                for step in steps:
                    stats.new_tokens += 1
                    if stats.first_token_s is None:
                        stats.first_token_s = time.perf_counter() - started
                    yield from text.put(step.token_id)
                    if stop_event is not None and stop_event.is_set():
                        break
                yield from text.end()
            finally:
                steps.close()  # stops CTranslate2's decoding thread after the current token
                stats.seconds = time.perf_counter() - started
                stats.stopped = stop_event is not None and stop_event.is_set()
                self.last_stats = stats

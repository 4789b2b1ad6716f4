"""The chat model: base model plus the trained PEFT adapter, streaming replies token by token.

Loading: :func:`rhizome.train.model.resolve_model` gives a local folder for the base (the shipped
SmolLM2 GGUF is converted once), then the adapter is applied with ``PeftModel.from_pretrained``.
In full precision the LoRA weights are merged into the base in memory (``merge_and_unload``): the same
outputs with no extra LoRA matmuls per layer. On CUDA with bitsandbytes the base is loaded in 4-bit NF4
and the adapter is kept unmerged, as in QLoRA, since merging into 4-bit weights would round the update.

Streaming: ``model.generate`` runs in a background thread and a ``TextIteratorStreamer`` hands the
decoded text over as it is produced; a stopping criterion checks a ``threading.Event`` after every
token, so a Stop button (or the caller abandoning the iterator) ends generation within one token.

Prefix reuse: the KV cache of the last generation (its prompt and reply) is kept. The next prompt is compared
with the cached token ids and only the tokens after the longest common prefix are prefilled; a prompt that
starts differently (another conversation, an edited history) is prefilled from where it differs, from the start
at worst, so reuse never changes the tokens the model attends to.
"""

from __future__ import annotations

import importlib.util
import threading
from abc import ABC, abstractmethod
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from rhizome.device import detect_device
from rhizome.log import get_logger
from rhizome.train.model import ModelNotFoundError, resolve_model

log = get_logger(__name__)

# For tokenizers without a chat template (base models): plain role headers the model can follow.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | capitalize }}: {{ message['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


@dataclass
class GenerationStats:
    """What the last :meth:`ChatModel.stream` did (for the page's status line and bench/chat.py)."""

    prompt_tokens: int = 0
    reused_tokens: int = 0  # prompt tokens whose state came from an earlier turn instead of this prefill
    new_tokens: int = 0
    first_token_s: float | None = None
    seconds: float = 0.0
    stopped: bool = False

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens after the first per second after it: the decoding speed, without the prompt's prefill."""
        decode_s = self.seconds - (self.first_token_s or 0.0)
        return (self.new_tokens - 1) / decode_s if self.new_tokens > 1 and decode_s > 0 else 0.0


def one_system_message(messages: list[dict]) -> list[dict]:
    """``messages`` with every system message but a leading one folded into the start of the message after it."""
    out: list[dict] = []
    pending = ""
    for i, message in enumerate(messages):
        if message["role"] == "system" and i > 0:
            pending += message["content"] + "\n\n"
            continue
        out.append({**message, "content": pending + message["content"]} if pending else message)
        pending = ""
    return out


def _streamer_class():
    from transformers import TextIteratorStreamer

    class CountingStreamer(TextIteratorStreamer):
        """Also counts generated tokens and notes when the first one arrived."""

        def __init__(self, *args, started: float, **kwargs):
            super().__init__(*args, **kwargs)
            self.started = started
            self.new_tokens = 0
            self.first_token_s: float | None = None
            self._prompt_seen = False

        def put(self, value):
            if self._prompt_seen:  # generate() first puts the whole prompt, then one token per step
                self.new_tokens += int(value.numel())
                if self.first_token_s is None:
                    self.first_token_s = time.perf_counter() - self.started
            self._prompt_seen = True
            super().put(value)

    return CountingStreamer


def wait_to_run(running: threading.Event | None, *stops: threading.Event | None) -> None:
    """Called before each new token: wait while ``running`` is clear (the page's voice is synthesising the reply's
    first words and needs the CPU the decoder would take) until it is set or a stop is asked for."""
    if running is None:
        return
    while not running.wait(0.05):
        if any(stop is not None and stop.is_set() for stop in stops):
            return


def _stop_criteria(*events: threading.Event, running: threading.Event | None = None):
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopOnEvent(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            wait_to_run(running, *events)
            stop = any(event.is_set() for event in events)
            return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([StopOnEvent()])


def _bitsandbytes_available() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


class ChatEngine(ABC):
    """What the chat needs of a model, whatever runs it: the tokenizer's prompt and counts, ``stream`` and its stats.
    ``engine`` names the runtime for screens and ``--stats`` ("torch float32", "ct2 int8")."""

    def __init__(self, tokenizer, description: str, *, engine: str, device: str = "cpu"):
        self.tokenizer = tokenizer
        self.description = description
        self.engine = engine
        self.device = device
        self.last_stats = GenerationStats()
        self._preparing: threading.Thread | None = None  # an engine's prefix being computed ahead, if any
        # One generation at a time: two at once on one model only slow each other down.
        self._generate_lock = threading.Lock()

    @staticmethod
    def prepare_tokenizer(tokenizer) -> str | None:
        """Give a tokenizer without a chat template plain role prompts, and a pad token; a note when templated."""
        note = None
        if not tokenizer.chat_template:
            tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
            note = "(no chat template: plain 'Role: text' prompts)"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return note

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def prepare(self, messages: list[dict]) -> None:
        """A hint that the next prompt will start with ``messages`` (a conversation so far, ending with the
        reply just given): an engine that can compute that prefix ahead does so in the background."""

    def wait_prepared(self, timeout: float | None = None) -> None:
        """Block until a prefix being computed ahead is ready (benchmarks timing the next turn, tests)."""
        if self._preparing is not None:
            self._preparing.join(timeout)

    @property
    @abstractmethod
    def context_length(self) -> int:
        """Most tokens the model attends to (prompt and reply together)."""

    def prompt_ids(self, messages: list[dict], add_generation_prompt: bool = True) -> torch.Tensor:
        from jinja2.exceptions import TemplateError

        try:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt)
        except TemplateError:
            # Templates that raise on a system message after the first (Gemma's, Mistral's) get each such message
            # (the chat's memories) as the start of the user message after it.
            text = self.tokenizer.apply_chat_template(one_system_message(messages), tokenize=False,
                                                      add_generation_prompt=add_generation_prompt)
        # The template already wrote any BOS it wants; adding special tokens again would double it.
        return self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]

    def stream(self, messages: list[dict], *, max_new_tokens: int = 256, temperature: float = 0.7,
               top_p: float = 0.9, repetition_penalty: float = 1.0,
               stop_event: threading.Event | None = None, running: threading.Event | None = None) -> Iterator[str]:
        """Yield the reply's text in pieces as it is generated; ``temperature`` 0 means greedy. A set ``stop_event``
        or the caller closing the iterator ends generation within one token; ``last_stats`` then says what it did.
        While ``running`` (if given) is clear, generation waits before its next token."""


class ChatModel(ChatEngine):
    """The PyTorch engine: any model transformers loads, on CPU, CUDA (also 4-bit NF4) or MPS."""

    def __init__(self, model, tokenizer, description: str, device: str = "cpu", engine: str = ""):
        engine = engine or f"torch {str(getattr(model, 'dtype', '')).removeprefix('torch.')}".strip()
        super().__init__(tokenizer, description, engine=engine, device=device)
        self.model = model
        self._cache = None  # the last generation's KV cache ...
        self._cached_ids: list[int] = []  # ... and the token ids it holds, both guarded by _generate_lock

    @classmethod
    def load(cls, base_model: str, adapter: str | None = None, device: str | None = None,
             force_cpu: bool = False, quantize: bool | None = None) -> ChatModel:
        """``base_model``: id, local folder or .gguf; ``adapter``: PEFT folder or None; ``quantize``:
        4-bit NF4 (None = when on CUDA with bitsandbytes installed)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve_model(base_model)
        if device is None:
            device = detect_device(force_cpu).torch_device
        if quantize is None:
            quantize = device.startswith("cuda") and _bitsandbytes_available()
        if device.startswith("cuda"):
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = torch.float16 if device == "mps" else torch.float32
        kwargs: dict = {"dtype": dtype}
        if quantize:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
            kwargs["device_map"] = {"": device}
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(
                f"cannot load chat model '{base_model}': {exc}\nPass --base-model with a local Hugging Face "
                "folder, a .gguf file or a model id already in your Hugging Face cache.") from exc
        if not quantize:
            model.to(device)
        parts = [f"{base_model} ({'4-bit NF4' if quantize else str(dtype).removeprefix('torch.')}, {device})"]
        if adapter:
            model = cls._apply_adapter(model, adapter, merge=not quantize)
            parts.append(f"+ adapter {adapter} ({'kept separate over 4-bit weights' if quantize else 'merged'})")
        model.eval()
        note = cls.prepare_tokenizer(tokenizer)
        if note:
            parts.append(note)
        return cls(model, tokenizer, " ".join(parts), device, engine="torch nf4" if quantize else "")

    @staticmethod
    def _apply_adapter(model, adapter: str, merge: bool):
        from peft import PeftModel

        try:
            peft_model = PeftModel.from_pretrained(model, adapter)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelNotFoundError(
                f"cannot apply adapter {adapter}: {exc}\nWas it trained on this base model? Pass the matching "
                "--base-model, another --adapter, or --adapter none.") from exc
        return peft_model.merge_and_unload() if merge else peft_model

    @property
    def context_length(self) -> int:
        config = getattr(self.model, "config", None)
        return int(getattr(config, "max_position_embeddings", 0) or 2048)

    def stream(self, messages: list[dict], *, max_new_tokens: int = 256, temperature: float = 0.7,
               top_p: float = 0.9, repetition_penalty: float = 1.0,
               stop_event: threading.Event | None = None, running: threading.Event | None = None) -> Iterator[str]:
        """Yield the reply's text in pieces as it is generated; ``temperature`` 0 means greedy."""
        started = time.perf_counter()
        input_ids = self.prompt_ids(messages).to(self.model.device)
        abandoned = threading.Event()  # set when the caller stops iterating, so the thread does not run on
        events = [abandoned] + ([stop_event] if stop_event is not None else [])
        streamer = _streamer_class()(self.tokenizer, skip_prompt=True, skip_special_tokens=True, started=started)
        sampling = ({"do_sample": True, "temperature": float(temperature), "top_p": float(top_p)}
                    if temperature and temperature > 0 else {"do_sample": False})
        kwargs = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), streamer=streamer,
                      max_new_tokens=int(max_new_tokens), repetition_penalty=float(repetition_penalty),
                      stopping_criteria=_stop_criteria(*events, running=running),
                      pad_token_id=self.tokenizer.pad_token_id,
                      **sampling)
        failure: list[BaseException] = []
        reused = [0]

        def generate() -> None:
            try:
                with self._generate_lock, torch.inference_mode():
                    kwargs["past_key_values"], reused[0] = self._reusable_cache(input_ids[0].tolist())
                    output = self.model.generate(**kwargs)
                    cache = kwargs["past_key_values"]
                    # generate() never runs its last token through the model: the cache ends one short of output.
                    self._cached_ids = output[0, :cache.get_seq_length()].tolist()
                    self._cache = cache
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
                self._cache, self._cached_ids = None, []
                failure.append(exc)
                streamer.end()

        thread = threading.Thread(target=generate, name="chat-generate", daemon=True)
        thread.start()
        try:
            for text in streamer:
                if text:
                    yield text
        finally:
            abandoned.set()
            thread.join()
            self.last_stats = GenerationStats(
                prompt_tokens=int(input_ids.shape[1]), reused_tokens=reused[0], new_tokens=streamer.new_tokens,
                first_token_s=streamer.first_token_s, seconds=time.perf_counter() - started,
                stopped=stop_event is not None and stop_event.is_set())
        if failure:
            raise failure[0]

    def _reusable_cache(self, ids: list[int]):
        """(a cache holding the longest prefix of ``ids`` that the last generation computed, its length); a new,
        empty cache when nothing matches. Called under ``_generate_lock``."""
        from transformers import DynamicCache

        cache, cached = self._cache, self._cached_ids
        self._cache, self._cached_ids = None, []  # taken: a failure mid-generation leaves no half-written cache
        common = 0
        for a, b in zip(cached, ids):
            if a != b:
                break
            common += 1
        # At least the prompt's last token is run, since its logits pick the first new token.
        common = min(common, len(ids) - 1)
        if cache is not None and common > 0:
            try:
                surplus = cache.get_seq_length() - common
                if surplus > 0:
                    cache.crop(-surplus)  # a negative count: what every transformers 5 accepts
                return cache, common
            except (AttributeError, NotImplementedError, ValueError):
                pass  # a cache kind that cannot be cut back (sliding-window layers): prefill it all
        return DynamicCache(config=self.model.config), 0


ENGINES = ("auto", "ct2", "ort", "torch")


def load_chat_model(base_model: str, adapter: str | None = None, engine: str = "auto",
                    force_cpu: bool = False) -> tuple[ChatEngine, str]:
    """(the chat model on the requested engine, a sentence for the screen saying which engine and why).

    ``auto`` on a CPU takes the fastest decoder that runs the model (bench/chat.py): ONNX Runtime GenAI int8, else
    CTranslate2 int8, else PyTorch, the sentence saying why each one before was passed over; on a GPU PyTorch,
    where it runs fp16/bf16 and 4-bit NF4 with the adapter unmerged as in QLoRA."""
    if engine not in ENGINES:
        raise ValueError(f"--engine {engine}: choose one of {', '.join(ENGINES)}")
    device = detect_device(force_cpu).torch_device
    if engine == "torch":
        model = ChatModel.load(base_model, adapter, device=device)
        return model, f"Engine: {model.engine} (--engine torch)."
    if engine == "ort":
        from rhizome.chat.engine_ort import ORTChatModel, ORTUnsupportedError

        if device != "cpu":
            raise ModelNotFoundError(f"--engine ort runs on a CPU only; chat on {device} with --engine torch or ct2, "
                                     "or add --force-cpu.")
        try:
            model = ORTChatModel.load(base_model, adapter)
        except ORTUnsupportedError as exc:
            raise ModelNotFoundError(f"--engine ort: {exc}. Chat with --engine ct2 or --engine torch instead.") from exc
        return model, f"Engine: {model.engine} (--engine ort)."
    from rhizome.chat.engine_ct2 import CT2ChatModel, CT2UnsupportedError

    if engine == "ct2":
        try:
            model = CT2ChatModel.load(base_model, adapter, device="cuda" if device.startswith("cuda") else "cpu")
        except CT2UnsupportedError as exc:
            raise ModelNotFoundError(f"--engine ct2: {exc}. Chat with --engine torch instead.") from exc
        return model, f"Engine: {model.engine} (--engine ct2)."
    if device != "cpu":
        model = ChatModel.load(base_model, adapter, device=device)
        return model, (f"Engine: {model.engine} (auto: on {device.upper()} PyTorch runs half precision and 4-bit "
                       "QLoRA adapters as trained).")
    from rhizome.chat.engine_ort import ORTChatModel, ORTUnsupportedError

    try:
        model = ORTChatModel.load(base_model, adapter)
        return model, (f"Engine: {model.engine} (auto: on a CPU ONNX Runtime GenAI decodes fastest, about 2x "
                       "CTranslate2 int8 and closer to fp32; --engine ct2 for a shorter first token, --engine torch "
                       "for fp32).")
    except ORTUnsupportedError as exc:
        log.warning("ONNX Runtime GenAI engine unavailable, trying CTranslate2: %s", exc)
        passed_over = f"{exc}; "
    try:
        model = CT2ChatModel.load(base_model, adapter)
    except CT2UnsupportedError as exc:
        log.warning("CTranslate2 engine unavailable, using PyTorch: %s", exc)
        model = ChatModel.load(base_model, adapter, device=device)
        return model, f"Engine: {model.engine} (auto: {passed_over}{exc}; --engine torch is the fallback)."
    return model, (f"Engine: {model.engine} (auto: {passed_over}CTranslate2's int8 decoding is the next fastest "
                   "engine here; --engine torch for PyTorch).")

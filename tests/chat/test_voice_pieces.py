"""Voice to voice: where a spoken reply's first piece ends, that the whole reply is spoken once and in order, and that
the page hands each piece out as soon as it is synthesised and shows the voice-to-voice time in its status line."""

import os
import re
import threading
import time

import numpy as np
import pytest

from rhizome.chat.app import (COMPLETE_WORD, FIRST_PIECE_WORDS, FLUSH_AFTER_S, FLUSHES, SECOND_PIECE_WORDS, ChatPage,
                              SpokenReply, first_piece_end, join_chunks, second_piece_end)
from rhizome.chat.config import ChatConfig
from rhizome.chat.llm import ChatModel
from rhizome.chat.retrieval import ChatMemory
from rhizome.chat.session import ChatSession
from rhizome.chat.stt import Transcriber

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPLIES = [
    "The first spring inspection should be short and calm, done on a warm day. Look for eggs.",
    "Yes. A worn chain is the most likely cause of skipping on the big cog when you climb a steep hill.",
    "Check for eggs and a laying queen, look at the stores, and close the hive again before the brood gets cold.",
    "Keep it at 15 to 20 °C.\nMist twice a day; fan for fresh air.",
    "Run this first:\n```\nx = 1, y = 2 and z = 3 but not 4\n```\nThen check the queen again and again.",
    "**Short** answer: *no*, not without a chain checker, but a ruler works.",
    "Too short.",
]


def first_piece(text: str) -> str:
    return text[:first_piece_end(text)]


def test_the_first_piece_ends_at_a_natural_break_after_a_few_words():
    # a conjunction from the 4th word on starts the next piece
    assert first_piece(REPLIES[0]) == "The first spring inspection should be short"
    # a comma before the 4th word is no break; one after it is
    assert first_piece(REPLIES[2]) == "Check for eggs and a laying queen,"
    assert first_piece("Yes, the first spring inspection, done on a warm day, is short. ") == \
        "Yes, the first spring inspection,"
    assert first_piece("Keep it at 15 to 20 °C. Mist twice a day. ") == "Keep it at 15 to 20 °C."
    # no break at all: after the 8th word, between two words
    assert first_piece(REPLIES[1]) == "Yes. A worn chain is the most likely"
    # a line break is a break
    assert first_piece("Do these four things\n- check the eggs\n") == "Do these four things"


def test_the_first_piece_waits_for_complete_words_and_never_ends_inside_code():
    # "inspec" may still become "inspection" or "inspector": nothing is cut until whitespace follows a word
    assert first_piece_end("The first spring inspec", 0) == 0
    assert first_piece_end("The first spring inspection", 0) == 0
    assert first_piece("The first spring inspection, d") == "The first spring inspection,"
    # "an" might be the start of "and": the conjunction is only seen once it is complete
    assert first_piece("The first spring inspection should be short an") == ""
    code = "Run this first:\n```\nx = 1, y = 2 and z = 3 but not 4\n"
    assert first_piece(code) == ""  # the opening words are too few, and code is not read aloud
    assert first_piece(REPLIES[4]) == REPLIES[4][:REPLIES[4].index("```\nThen")] + "```\nThen check the queen again"
    assert first_piece("Too short.") == "" and first_piece("") == ""


def test_the_second_piece_is_cut_the_same_way_with_at_most_12_words():
    rest = " done on a warm day when the bees fly and the brood can take the cold for a few minutes. "
    assert rest[:second_piece_end(rest, 0)] == " done on a warm day"  # before "when"
    rest = " look at how much honey is left in every frame of the top box today. "
    assert rest[:second_piece_end(rest, 0)] == " look at how much honey is left in every frame of the"


def test_a_later_start_finds_the_first_piece_after_it():
    text = "Already spoken. The first spring inspection should be short and calm."
    start = len("Already spoken.")
    assert text[start:first_piece_end(text, start)] == " The first spring inspection should be short"


class RecordingVoice:
    """Records what it was asked to say, one sample per character (clips can be told apart); ``delay`` seconds per
    call, as a real voice takes its time."""

    voices = ("v",)
    default_voice = "v"

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.said: list[str] = []
        self.done_at: list[float] = []

    def speak(self, text, voice=None):
        time.sleep(self.delay)
        self.said.append(text)
        self.done_at.append(time.perf_counter())
        return 24000, np.ones(len(text), dtype=np.int16)


@pytest.mark.parametrize("reply", REPLIES)
@pytest.mark.parametrize("step", [1, 3, 11])
def test_a_streamed_reply_is_spoken_whole_once_in_order_in_pieces_of_whole_words(reply, step):
    voice = RecordingVoice()
    spoken = SpokenReply(voice, "v")
    try:
        for end in range(step, len(reply) + step, step):
            spoken.feed(reply[:end])
        samples = join_chunks(spoken.finish(reply))[1]
    finally:
        spoken.close()
    assert "".join(voice.said) == reply
    assert all(piece.strip() for piece in voice.said), "no piece is empty"
    words = {match.end() for match in re.finditer(r"\S+", reply)} | {len(reply)}
    cuts = np.cumsum([len(piece) for piece in voice.said])
    assert all(cut in words or reply[cut - 1].isspace() for cut in cuts), "a piece ended inside a word"
    for piece, words in zip(voice.said[:-1], (FIRST_PIECE_WORDS, SECOND_PIECE_WORDS)):
        assert len(COMPLETE_WORD.findall(piece + " ")) <= words[1] or "```" in piece
    assert (samples == 1).sum() == len(reply), "each character's sample played once"


class Typed(Transcriber):
    """Speech to text that hears a fixed question (the page's handling of it is under test, not Whisper's)."""

    name = "fixed question"

    def _recognise(self, samples):
        return "Why does my bike chain skip on the big cog?"


@pytest.fixture
def session(tiny_chat_model_dir, small_memory_dir) -> ChatSession:
    import torch

    model = ChatModel.load(tiny_chat_model_dir, None, device="cpu")
    config = ChatConfig(memory_dir=str(small_memory_dir), remember=False, temperature=1.0, min_score=0.2,
                        stt="none", tts="none")
    torch.manual_seed(0)
    return ChatSession(config, model, ChatMemory.from_config(config, count_tokens=model.count_tokens))


def test_the_status_line_shows_voice_to_voice_and_pieces_go_out_before_the_rest_is_synthesised(session):
    voice = RecordingVoice(delay=0.3)  # slower than the tiny model writes: the text is done before the voice
    page = ChatPage(session, stt=Typed(), tts=voice, speak=True)
    page.stream_audio = True
    question, _ = page.transcribe((16000, np.zeros(16000, dtype=np.int16)))
    updates = []
    for update in page.reply([{"role": "user", "content": question}], 1.0, 48, speak=True):
        updates.append((time.perf_counter(), update))
    timing, status = page.last_timing, updates[-1][1][3]
    reply = updates[-1][1][0][-1]["content"]
    assert len(voice.said) >= 2 and "".join(voice.said) == reply
    # The first piece went out when it was synthesised, not when the whole reply was.
    sent = [(at, audio) for at, (_, _, audio, _) in updates if isinstance(audio, tuple)]
    pieces = [at for at, (_, samples) in sent if len(samples) > 1]
    assert len(pieces) >= 2 and pieces[0] < voice.done_at[-1]
    # Each piece is followed, before the next, by samples of silence (FLUSH_AFTER_S apart, at most FLUSHES) that make
    # Gradio's encoder hand the piece's audio to the browser (a clip here takes 0.3 s to synthesise).
    kinds = "".join("f" if len(samples) == 1 else "p" for _, (_, samples) in sent)
    assert re.fullmatch(f"(pf{{1,{FLUSHES}}})+pf{{0,{FLUSHES}}}", kinds), kinds
    gaps = [b - a for (a, (_, x)), (b, (_, y)) in zip(sent, sent[1:]) if len(x) > 1 and len(y) == 1]
    assert min(gaps) >= FLUSH_AFTER_S
    assert f"voice to voice {timing.first_audio_s:.2f} s" in status
    assert f"speech to text {timing.speech_to_text_s:.2f} s" in status
    steps = [timing.speech_to_text_s, timing.memories_s, timing.first_token_s, timing.first_piece_s,
             timing.first_clip_s, timing.first_audio_s]
    assert all(a <= b for a, b in zip(steps, steps[1:])), steps
    assert timing.first_clip_s - timing.first_piece_s >= 0.3 and timing.first_piece == voice.said[0]


def test_a_failing_voice_leaves_the_text_reply_and_no_voice_to_voice_time(session):
    class Broken(RecordingVoice):
        def speak(self, text, voice=None):
            raise RuntimeError("espeak-ng is missing")

    page = ChatPage(session, tts=Broken(), speak=True)
    page.stream_audio = True
    *_, (chat, _, audio, status) = page.reply([{"role": "user", "content": "Hi"}], 1.0, 24, speak=True)
    assert chat[-1]["content"] and audio is None and "first audio" not in status


@pytest.mark.parametrize("engine", ["torch", "ct2", "ort"])
def test_the_model_waits_while_it_is_told_to_and_then_finishes_the_reply(engine, tiny_chat_model_dir, request):
    if engine == "ct2":
        from rhizome.chat.engine_ct2 import CT2ChatModel

        request.getfixturevalue("models_dir")
        model = CT2ChatModel.load(tiny_chat_model_dir, None)
    elif engine == "ort":
        from rhizome.chat.engine_ort import ORTChatModel

        request.getfixturevalue("models_dir")
        # ONNX Runtime's attention kernel wants head sizes in multiples of 16
        folder = request.getfixturevalue("make_tiny_model")(hidden_size=64, intermediate_size=128, head_dim=16)
        model = ORTChatModel.load(folder, None)
    else:
        model = ChatModel.load(tiny_chat_model_dir, None, device="cpu")
    messages = [{"role": "user", "content": "Why does my bike chain skip?"}]
    start = time.perf_counter()
    full = "".join(model.stream(messages, max_new_tokens=12, temperature=0))
    alone_s = time.perf_counter() - start
    running = threading.Event()
    got: list[str] = []
    stream = model.stream(messages, max_new_tokens=12, temperature=0, running=running)
    reader = threading.Thread(target=lambda: got.extend(stream))
    reader.start()
    time.sleep(max(1.0, 3 * alone_s))
    held, unfinished = "".join(got), reader.is_alive()
    running.set()
    reader.join(30)
    # at most the token already being computed when it was told to wait
    assert unfinished and model.count_tokens(held) <= 1 and "".join(got) == full


@pytest.mark.slow
def test_kokoro_speaks_each_first_piece_to_its_last_word():
    """Listen-free: Whisper hears as many words as the first piece has, the last one whole. One other word may be
    misheard (tiny.en heard "and" as "on" once): what this guards is the piece's end, not Whisper's accuracy."""
    from rhizome.chat.stt import load_stt
    from rhizome.chat.tts import load_tts

    tts, stt = load_tts("kokoro"), load_stt("whisper")
    replies = [REPLIES[0], REPLIES[1], REPLIES[2], "Mushrooms like it humid, but they also need fresh air."]
    for reply in replies:
        piece = first_piece(reply)
        heard = stt.transcribe(tts.speak(piece))
        said, got = re.findall(r"[a-z']+", piece.lower()), re.findall(r"[a-z']+", heard.lower())
        assert len(got) == len(said) and got[-1] == said[-1], (piece, heard)
        assert sum(a != b for a, b in zip(said, got)) <= 1, (piece, heard)

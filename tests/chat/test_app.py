"""The chat page's handlers without a browser: streamed replies, sources, Stop, and missing speech parts."""

import itertools
import os
import sys
import threading

import gradio as gr
import numpy as np
import pytest
import torch

from rhizome.chat.app import (NO_SOURCES, ChatPage, SpokenReply, build_app, hide_paths, join_chunks,
                              plain_history, shown_path, speakable_end)
from rhizome.chat.config import ChatConfig
from rhizome.chat.llm import ChatModel
from rhizome.chat.retrieval import ChatMemory
from rhizome.chat.server import load_speech
from rhizome.chat.session import ChatSession
from rhizome.chat.tts import SENTENCE_PAUSE_S

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny_model(tiny_chat_model_dir) -> ChatModel:
    return ChatModel.load(tiny_chat_model_dir, None, device="cpu")


@pytest.fixture
def session(tiny_model, small_memory_dir) -> ChatSession:
    config = ChatConfig(memory_dir=str(small_memory_dir), remember=False, max_new_tokens=24, temperature=0.0,
                        min_score=0.2, stt="none", tts="none")
    memory = ChatMemory.from_config(config, count_tokens=tiny_model.count_tokens)
    torch.manual_seed(0)  # replies are sampled: a random model's greedy choice is a run of newlines
    return ChatSession(config, tiny_model, memory)


def test_reply_streams_a_growing_answer_and_lists_the_memories_used(session):
    page = ChatPage(session)
    box, history = page.add_user_message("  Why does my bike chain skip on the big cog?  ", [])
    assert box == "" and history == [{"role": "user", "content": "Why does my bike chain skip on the big cog?"}]

    updates = list(page.reply(history, temperature=1.0, max_new_tokens=16))

    replies = [chat[-1]["content"] for chat, *_ in updates if chat[-1]["role"] == "assistant"]
    partial = [r for r in replies if r]
    assert len(set(partial)) >= 3, "the reply should arrive in several growing pieces"
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(partial))
    final_chat, final_sources, audio, status = updates[-1]
    assert final_chat[0] == history[0] and final_chat[-1]["content"] == partial[-1]
    assert "chain" in final_sources.lower() and "score" in final_sources
    assert "oyster" not in final_sources.lower(), "an unrelated memory under the score threshold was shown"
    assert audio is None
    # The status line ends with this reply's numbers, as the session's engine counted them.
    stats = session.model.last_stats
    assert status.endswith(page.last_timing.line()) and f"prompt {stats.prompt_tokens} tokens" in status
    assert 0 < page.last_timing.first_token_s and page.last_timing.first_audio_s is None


def test_reply_continues_a_conversation_given_as_gradio_message_parts(session):
    page = ChatPage(session)
    history = [{"role": "user", "content": [{"type": "text", "text": "Hello"}]},
               {"role": "assistant", "content": [{"type": "text", "text": "Hi!"}]},
               {"role": "user", "content": [{"type": "text", "text": "How warm for oyster mushrooms?"}]}]
    assert plain_history(history)[2] == {"role": "user", "content": "How warm for oyster mushrooms?"}
    *_, (chat, sources, _, _) = page.reply(history, temperature=1.0, max_new_tokens=8)
    assert len(chat) == 4 and chat[-1]["role"] == "assistant" and chat[-1]["content"]
    assert "oyster" in sources.lower()


def test_nothing_happens_without_a_new_user_message(session):
    page = ChatPage(session)
    box, history = page.add_user_message("   ", [])
    assert box == "   " and history == []
    (chat, sources, audio, status), = list(page.reply([], 0.7, 32))
    assert chat == [] and sources == gr.skip() and audio == gr.skip() and status == gr.skip()


def test_stop_ends_the_reply_early_and_keeps_what_was_written(session):
    page = ChatPage(session)
    history = [{"role": "user", "content": "Tell me everything about bike chains."}]
    replies = []
    for chat, *_ in page.reply(history, temperature=1.0, max_new_tokens=200):
        replies.append(chat[-1]["content"])
        if len(replies) == 4:  # after the placeholder, the sources and two pieces of text
            threading.Thread(target=page.stop).start()
    stats = session.model.last_stats
    assert stats.stopped and stats.new_tokens < 200
    assert replies[-1] and replies[-1].startswith(replies[3])


def test_clear_empties_the_chat_and_the_sources_panel(session):
    assert ChatPage(session).clear() == ([], NO_SOURCES, None)


def test_missing_speech_parts_become_a_notice_and_text_chat_still_works(session, monkeypatch, tmp_path):
    from rhizome.chat.tts import load_tts

    load_tts.cache_clear()
    monkeypatch.setitem(sys.modules, "kokoro_onnx", None)  # what find_spec sees when the package is absent
    config = ChatConfig(stt="vosk", vosk_model=str(tmp_path / "no-such-vosk-model"), tts="kokoro")
    stt, tts, notices = load_speech(config)
    load_tts.cache_clear()

    assert stt is None and tts is None
    assert any("Voice input is off" in n and "vosk" in n.lower() for n in notices)
    assert any("Spoken replies are off" in n and "pip install kokoro-onnx" in n for n in notices)
    page = ChatPage(session, stt, tts, notices=notices)
    app = build_app(page)
    shown = {c.elem_id: c for c in app.blocks.values() if getattr(c, "elem_id", None)}
    assert shown["notice"].visible and "pip install kokoro-onnx" in shown["notice"].value
    assert shown["voice-input"].visible is False and shown["speak"].visible is False
    with pytest.raises(gr.Error):
        page.transcribe(str(tmp_path / "take.wav"))
    *_, (chat, _, audio, _) = page.reply([{"role": "user", "content": "Hello?"}], 1.0, 8, speak=True)
    assert chat[-1]["content"] and audio is None


def test_no_notice_when_speech_is_turned_off_on_purpose(session):
    stt, tts, notices = load_speech(ChatConfig(stt="none", tts="none"))
    assert (stt, tts, notices) == (None, None, [])
    shown = {c.elem_id: c for c in build_app(ChatPage(session)).blocks.values() if getattr(c, "elem_id", None)}
    assert shown["notice"].visible is False


def test_spoken_pieces_end_after_finished_sentences_outside_code():
    text = "Version 3.5 is out. Update it now! Then"
    assert text[:speakable_end(text, 0)] == "Version 3.5 is out. Update it now!"
    assert speakable_end(text, len(text) - 4) == len(text) - 4
    code = "Run this:\n```\nx = 1. y = 2\n"
    assert code[:speakable_end(code, 0)] == "Run this:\n"
    assert speakable_end(code + "```\nDone. ", 0) == len(code + "```\nDone.")


class RecordingVoice:
    """A voice that records what it was asked to say; its samples are one per character, so clips can be told apart
    (the real Kokoro is in the slow test below)."""

    voices = ("v",)
    default_voice = "v"

    def __init__(self):
        self.said: list[str] = []

    def speak(self, text, voice=None):
        self.said.append(text)
        return 24000, np.ones(len(text), dtype=np.int16)


def test_the_first_words_are_spoken_before_their_clause_ends_and_pieces_come_out_in_order():
    voice = RecordingVoice()
    spoken = SpokenReply(voice, "v")
    reply = ("The first spring inspection should be short, done on a warm day. Look for eggs and a laying queen "
             "in the middle frames. Close the hive before the brood gets cold.")
    chunks = []
    try:
        for end in range(1, len(reply) + 1, 5):
            spoken.feed(reply[:end])
            spoken.pool.submit(lambda: None).result()  # let the voice's one worker catch up, as time would
            chunks.append(spoken.ready())
        chunks.extend(spoken.finish(reply))
    finally:
        spoken.close()
    # a few words, handed over before their sentence ended; then a clause; then whole sentences of 60 characters
    assert voice.said == ["The first spring inspection should be short,", " done on a warm day.",
                          " Look for eggs and a laying queen in the middle frames. Close the hive before the brood "
                          "gets cold."]
    assert "".join(voice.said) == reply
    played = [chunk for chunk in chunks if chunk is not None]
    assert len(played) >= 2 and all(rate == 24000 for rate, _ in played)
    # Every clip once, in order, each after the pause that follows the piece before it (shorter after a comma).
    pauses = int(SENTENCE_PAUSE_S / 2 * 24000) + int(SENTENCE_PAUSE_S * 24000)
    assert sum(len(samples) for _, samples in played) == len(reply) + pauses
    assert played[0][1][0] == 1
    assert spoken.first_clip_s is not None and spoken.first_piece_s < spoken.first_clip_s


@pytest.mark.slow
def test_spoken_reply_is_synthesised_while_the_text_streams(session):
    from rhizome.chat.tts import load_tts

    tts = load_tts("kokoro")
    reply = ("The first spring inspection should be short and calm. Look for eggs and a laying queen. "
             "Check how much honey is left, and close the hive before the brood gets cold. "
             "Write down what you saw.")
    voice = SpokenReply(tts, tts.default_voice)
    try:
        for end in range(1, len(reply) + 1, 7):  # the reply as it streams in, a few characters at a time
            voice.feed(reply[:end])
        assert len(voice.clips) >= 2, "finished sentences should go to the voice before the reply ends"
        rate, samples = join_chunks(voice.finish(reply))
    finally:
        voice.close()
    assert rate == 24000 and samples.dtype == np.int16 and len(samples) / rate > 4
    assert voice.handed_over == len(reply)

    page = ChatPage(session, tts=tts, voice=tts.default_voice, speak=True)
    updates = list(page.reply([{"role": "user", "content": "Hi"}], 1.0, 12, speak=True))
    chat, audio = updates[-1][0], [update[2] for update in updates if isinstance(update[2], tuple)]
    assert chat[-1]["content"] and audio and all(rate == 24000 and len(samples) for rate, samples in audio)
    assert 0 < page.last_timing.first_audio_s and "first audio" in updates[-1][3]


def test_paths_are_shown_relative_to_the_working_folder_or_by_their_last_two_names(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "memory").mkdir(parents=True)
    monkeypatch.chdir(project)
    assert shown_path(project / "memory" / "memory_texts.npy") == "memory/memory_texts.npy"
    assert shown_path(project) == "."
    assert shown_path(tmp_path / "runs" / "smol-finetuned" / "final") == "…/smol-finetuned/final"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert shown_path(tmp_path / "home" / "memory") == "…/memory", "the home folder's name is a user name"
    assert shown_path("~") == "~"

    line = (f"Adapter {tmp_path}/runs/smol-finetuned/final over {project}/models/smol. Memory: 4 items "
            f"({project}/memory/memory_texts.npy); see https://example.org/a/b, pp. 3/4 and ~/notes.")
    assert hide_paths(line) == ("Adapter …/smol-finetuned/final over models/smol. Memory: 4 items "
                                "(memory/memory_texts.npy); see https://example.org/a/b, pp. 3/4 and …/notes.")


def test_status_and_notices_on_the_page_name_no_absolute_path(session, tmp_path):
    page = ChatPage(session, notices=[f"**Voice input is off**: no Vosk model in {tmp_path}/vosk."],
                    status=[f"Memory: 4 items ({tmp_path}/memory_texts.npy)."])
    shown = {c.elem_id: c.value for c in build_app(page).blocks.values() if getattr(c, "elem_id", None)}
    assert str(tmp_path) not in shown["notice"] + shown["status"]
    assert f"…/{tmp_path.name}/vosk." in shown["notice"] and f"…/{tmp_path.name}/memory_texts.npy" in shown["status"]


def test_an_unreadable_recording_is_a_message_on_the_page_without_its_folder(session, tmp_path):
    from rhizome.chat.stt import load_stt

    take = tmp_path / "take.wav"
    take.write_bytes(b"RIFF" + b"not audio" * 20)
    with pytest.raises(gr.Error) as error:
        ChatPage(session, stt=load_stt("whisper")).transcribe(str(take))
    assert "Could not transcribe the recording" in error.value.message and "take.wav" in error.value.message
    assert str(tmp_path) not in error.value.message

"""The chat page: streamed replies, the memories each reply used, voice in and out.

:class:`ChatPage` holds the page's handlers as plain methods (tests drive them without a
browser); :func:`build_app` lays them out as a Gradio Blocks page. Generation runs in
``ChatModel.stream``'s own thread, so the Stop button (a per-browser-tab event) takes effect
between two tokens, and the words written so far stay in the chat.

What the page shows names files relative to the working folder (:func:`hide_paths`): the page and its
``/config`` carry no absolute path of the machine it runs on.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import gradio as gr
import numpy as np

from rhizome.chat.retrieval import plain_text
from rhizome.chat.session import ChatSession, format_sources
from rhizome.chat.tts import SENTENCE_PAUSE_S
from rhizome.log import get_logger

log = get_logger(__name__)

NO_SOURCES = "_No memories used yet._"
SEARCHING = "_Searching memory…_"
SOURCES_HEADER = "**Memories used for this reply**\n\n"
MAX_TOKENS_LIMIT = 2048
# Spoken replies: the voice starts on the reply's first few words (FIRST_PIECE_WORDS, cut at a natural break), since
# Kokoro's time grows with the text and the user hears nothing until that piece is synthesised; the second piece is
# cut the same way (SECOND_PIECE_WORDS), and later pieces are whole sentences (MIN_SPOKEN_CHARS or more), which the
# voice reads more naturally and which are synthesised while the earlier pieces play.
FIRST_PIECE_WORDS = (4, 8)  # the first natural break from the 4th word on, else after the 8th word
# The second piece is synthesised while the first plays (2-3 s): at most 12 words (~1.5 s of Kokoro's time on 2 cores
# beside the decoder) keeps the voice from falling silent between them.
SECOND_PIECE_WORDS = (4, 12)
MIN_SPOKEN_CHARS = 60
SENTENCE_END = re.compile(r"[.!?](?=\s)|\n")
# A word the next piece may start with: the voice reads "...the brood, | and close the hive" naturally.
CONJUNCTIONS = frozenset("and but or nor so because then which while when where if though although unless until "
                         "that".split())
COMPLETE_WORD = re.compile(r"\S+(?=\s)")  # whitespace after it: the model has finished writing it
WHITESPACE = re.compile(r"\s*")
# Silence before a piece: a sentence's end pauses longer than a clause's; a cut between two words needs none, as
# Kokoro's clips start and end with a little silence of their own.
PIECE_PAUSE_S = {".": SENTENCE_PAUSE_S, "!": SENTENCE_PAUSE_S, "?": SENTENCE_PAUSE_S, "\n": SENTENCE_PAUSE_S,
                 ",": SENTENCE_PAUSE_S / 2, ";": SENTENCE_PAUSE_S / 2, ":": SENTENCE_PAUSE_S / 2}
# Gradio streams audio through one ffmpeg AAC encoder, and the segment made from a chunk holds only the frames encoded
# by the time it was handed over (of the first, ~40 ms); the rest would leave with the next piece, a second or more
# later. A sample of silence sent this long after a piece hands its audio to the browser meanwhile; on a busy CPU
# the encoder may not be done by then, so up to FLUSHES are sent, FLUSH_AFTER_S apart, until the next piece.
FLUSH_AFTER_S = 0.08
FLUSHES = 3
# An absolute (or ~) path in a sentence: not inside a word, a number or a URL ("http://...").
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])~?/[^\s'\"`()<>\[\]{},;|*]+")
# Gradio's temporary files (uploads, spoken replies): every hour those older than an hour are deleted, and
# all of them when the page stops, so recordings of the user's voice do not outlive the page.
CACHE_SWEEP_SECONDS = (3600, 3600)


def shown_path(path: str | Path) -> str:
    """How the page names a file or folder: relative to the working folder, else its last two names
    (``…/run-finetuned/final``), never the folders above them (user name, layout of the machine)."""
    full = Path(path).expanduser().resolve()
    cwd, home = Path.cwd(), Path.home()
    if full.is_relative_to(cwd):
        return full.relative_to(cwd).as_posix()
    in_home = full.is_relative_to(home)
    parts = full.relative_to(home).parts if in_home else full.parts[1:]
    if not parts:
        return "~" if in_home else "/"
    return "…/" + "/".join(parts[-2:])


def hide_paths(text: str) -> str:
    """``text`` with each absolute path in it written as :func:`shown_path` (a sentence's final . kept)."""

    def shown(match: re.Match) -> str:
        path = match.group()
        trail = len(path) - len(path.rstrip(".:"))
        return shown_path(path[:len(path) - trail]) + path[len(path) - trail:]

    return ABSOLUTE_PATH.sub(shown, text)


def plain_history(history: Sequence[dict] | None) -> list[dict]:
    """Chatbot messages as the plain ``{"role", "content": str}`` dicts the session expects."""
    return [{"role": m["role"], "content": plain_text(m.get("content"))}
            for m in history or () if m.get("role") in ("user", "assistant")]


def sources_markdown(hits: Sequence) -> str:
    return SOURCES_HEADER + format_sources(hits) if hits else "_No memory matched this message._"


@dataclass
class TurnTiming:
    """One reply's latency as the page measured it, in seconds from the end of the user's speech (a spoken question:
    when the recording reached the page, so speech to text is included) or from sending a typed message. The steps
    in order: the transcript, the memories found and the prompt built, the first token, the first spoken piece
    complete in the text, that piece synthesised, and its audio handed to the page's audio output."""

    speech_to_text_s: float | None = None
    memories_s: float | None = None
    first_token_s: float | None = None
    first_piece_s: float | None = None
    first_clip_s: float | None = None
    # voice to voice: when the reply's first sample is handed to the page's audio output (streamed), or all of the
    # spoken reply (no ffmpeg: Gradio then plays it whole)
    first_audio_s: float | None = None
    first_piece: str = ""
    prompt_tokens: int = 0
    reused_tokens: int = 0
    decode_tokens_per_s: float = 0.0

    def line(self) -> str:
        parts = [f"prompt {self.prompt_tokens} tokens ({self.reused_tokens} reused)"]
        if self.first_token_s is not None:
            parts.append(f"first token {self.first_token_s:.2f} s")
        parts.append(f"{self.decode_tokens_per_s:.0f} tokens/s")
        if self.first_audio_s is not None:
            spoken = "voice to voice" if self.speech_to_text_s is not None else "first audio"
            parts.append(f"{spoken} {self.first_audio_s:.2f} s")
        if self.speech_to_text_s is not None:
            parts.append(f"speech to text {self.speech_to_text_s:.2f} s")
        return "Last reply: " + ", ".join(parts)


def _outside_code(text: str, end: int) -> bool:
    return text.count("```", 0, end) % 2 == 0


def speakable_end(text: str, start: int) -> int:
    """Where the last finished sentence after ``start`` ends (``start`` if none), outside code blocks.

    A sentence counts as finished once whitespace follows its . ! ? (so the "3." of "3.5" is no end)
    or at a line break; text inside an unclosed ``` block waits until the block closes."""
    end = start
    for match in SENTENCE_END.finditer(text, start):
        if _outside_code(text, match.end()):
            end = match.end()
    return end


def first_piece_end(text: str, start: int = 0, words: tuple[int, int] = FIRST_PIECE_WORDS) -> int:
    """Where the reply's first spoken piece ends (``start`` while it is not complete yet): at the first natural break
    once it has ``words[0]`` words (after a clause's punctuation or a line break, or before a conjunction), else after
    its ``words[1]``-th word. Only complete words count (whitespace after them), so a piece never ends inside a word,
    and never inside a code block."""
    fewest, most = words
    count, end = 0, start
    for word in COMPLETE_WORD.finditer(text, start):
        if "```" in word.group() or not _outside_code(text, word.end()):
            continue
        if count >= fewest and word.group().lower().strip("\"'(*_") in CONJUNCTIONS:
            return end
        count, end = count + 1, word.end()
        at_break = word.group()[-1] in ",;:.!?" or "\n" in WHITESPACE.match(text, end).group()
        if count >= fewest and at_break or count >= most:
            return end
    return start


def second_piece_end(text: str, start: int) -> int:
    """Where the reply's second spoken piece ends: as the first, with at most SECOND_PIECE_WORDS[1] words."""
    return first_piece_end(text, start, SECOND_PIECE_WORDS)


def pause_before_next(piece: str) -> float:
    """The silence after ``piece`` when another follows: longer after a sentence's end than after a clause's."""
    last = piece.rstrip(" \t")[-1:]
    return PIECE_PAUSE_S.get(last, 0.0)


def join_chunks(chunks) -> tuple[int, np.ndarray] | None:
    """The chunks :class:`SpokenReply` hands out (each starting with the pause that precedes it) as one clip."""
    chunks = [chunk for chunk in chunks if chunk is not None]
    return (chunks[0][0], np.concatenate([samples for _, samples in chunks])) if chunks else None


class SpokenReply:
    """Speaks a reply in the background while the rest is still being written: its first few words as soon as they
    are complete (:func:`first_piece_end`), then a few more (:func:`second_piece_end`), then finished sentences, each
    synthesised while the ones before it play."""

    def __init__(self, tts, voice: str = "", started: float | None = None,
                 rules=(first_piece_end, second_piece_end), running: threading.Event | None = None):
        self.tts = tts
        self.voice = voice or None
        self.rules = rules  # (reply, start) -> where the first piece ends, and the second
        # Cleared while the first piece is synthesised: the chat model, sharing the CPU, waits (ChatEngine.stream).
        self.running = running
        self.handed_over = 0  # characters of the reply already given to the voice
        self.pieces: list[str] = []
        self.clips: list[Future] = []
        self.delivered = 0  # clips already handed to the page
        self.started = time.perf_counter() if started is None else started
        self.first_piece_s: float | None = None  # from ``started`` to the first piece handed to the voice
        self.first_clip_s: float | None = None  # ... and to its audio synthesised
        self.failed = False
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chat-tts")

    def _speak(self, text: str, first: bool = False) -> tuple[int, np.ndarray]:
        try:
            rate, samples = self.tts.speak(text, self.voice)
        finally:
            if first and self.running is not None:
                self.running.set()
        if self.first_clip_s is None and len(samples):
            self.first_clip_s = time.perf_counter() - self.started
        return rate, samples

    def _hand_over(self, reply: str, end: int) -> None:
        first = self.first_piece_s is None
        if first:
            self.first_piece_s = time.perf_counter() - self.started
            if self.running is not None:
                self.running.clear()
        self.pieces.append(reply[self.handed_over:end])
        self.clips.append(self.pool.submit(self._speak, self.pieces[-1], first))
        self.handed_over = end

    def _next_end(self, reply: str) -> int:
        start = self.handed_over
        if len(self.clips) < len(self.rules):
            return self.rules[len(self.clips)](reply, start)
        end = speakable_end(reply, start)
        return end if end - start >= MIN_SPOKEN_CHARS else start

    def feed(self, reply: str) -> None:
        """Hand the voice each piece of ``reply`` (the text so far) that is now complete."""
        while (end := self._next_end(reply)) > self.handed_over:
            self._hand_over(reply, end)

    def ready(self) -> tuple[int, np.ndarray] | None:
        """The clips synthesised since the last call, in order, as (sample rate, int16 samples) to play next; None
        when there are none yet."""
        done = []
        while self.delivered + len(done) < len(self.clips) and self.clips[self.delivered + len(done)].done():
            done.append(self.clips[self.delivered + len(done)])
        return self._chunk(done)

    def finish(self, reply: str, poll_s: float | None = None) -> Iterator[tuple[int, np.ndarray] | None]:
        """Hand the voice the rest of the reply, then yield the clips not yet given, each as soon as it is
        synthesised (with any others done by then), and None each ``poll_s`` seconds without one; nothing more once
        speaking failed (a warning says so)."""
        if reply[self.handed_over:].strip():
            self._hand_over(reply, len(reply))
        while self.delivered < len(self.clips) and not self.failed:
            if not wait([self.clips[self.delivered]], timeout=poll_s).done:
                yield None
                continue
            chunk = self.ready()
            if chunk is not None:
                yield chunk

    def _chunk(self, futures: list[Future]) -> tuple[int, np.ndarray] | None:
        first, self.delivered = self.delivered, self.delivered + len(futures)
        if self.failed or not futures:
            return None
        try:
            clips = [future.result() for future in futures]
        except Exception as exc:  # a voice engine failure must not lose the text reply
            self.failed = True
            log.warning("text to speech failed: %s", exc)
            gr.Warning(hide_paths(f"Could not speak the reply: {exc}"))
            return None
        rate = clips[0][0]
        parts = []
        for index, (_, samples) in enumerate(clips, first):
            if index:  # not the reply's first words: the pause after the piece before comes first
                parts.append(np.zeros(int(pause_before_next(self.pieces[index - 1]) * rate), dtype=np.int16))
            parts.append(samples)
        samples = np.concatenate(parts)
        return (rate, samples) if len(samples) else None

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class ChatPage:
    """Everything the page does, independent of how it is laid out."""

    def __init__(self, session: ChatSession, stt=None, tts=None, notices: Sequence[str] = (),
                 status: Sequence[str] = (), voice: str = "", speak: bool = False):
        self.session = session
        self.stt = stt
        self.tts = tts
        self.notices = [hide_paths(line) for line in notices]
        self.status = [hide_paths(line) for line in status]
        self.voice = voice if tts is not None and voice in tts.voices else getattr(tts, "default_voice", "")
        self.speak = bool(speak and tts is not None)
        # Gradio encodes a streamed audio output with the ffmpeg program; without it the spoken reply is one clip,
        # handed over when all of it is synthesised.
        self.stream_audio = shutil.which("ffmpeg") is not None
        # where a spoken reply's first and second pieces end (bench/chat.py compares rules)
        self.piece_rules = (first_piece_end, second_piece_end)
        # The chat model waits while a spoken reply's first piece is synthesised: on a CPU the two share the cores,
        # and the reply's text is far ahead of its speech anyway (bench/chat.py --only voice measures both ways).
        self.hold_decoder = True
        self.flushes = FLUSHES  # samples of silence sent after each streamed piece (FLUSH_AFTER_S)
        self._stops: dict[str, threading.Event] = {}
        self._heard: dict[str, tuple[float, float]] = {}  # per tab: (recording received, speech-to-text seconds)
        self.last_timing: TurnTiming | None = None  # the latest reply's, as its status line shows it
        self._lock = threading.Lock()

    @staticmethod
    def _tab(request: gr.Request | None) -> str:
        return getattr(request, "session_hash", None) or "local"

    def _new_stop_event(self, request: gr.Request | None) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._stops[self._tab(request)] = event
        return event

    def add_user_message(self, message: str, history: list[dict] | None) -> tuple[str, list[dict]]:
        """Move the typed text into the chat; the reply handler answers the last user message."""
        history = list(history or [])
        text = (message or "").strip()
        if not text:
            return message or "", history
        return "", history + [{"role": "user", "content": text}]

    def reply(self, history: list[dict] | None, temperature: float, max_new_tokens: float, speak: bool = False,
              voice: str = "", request: gr.Request | None = None
              ) -> Iterator[tuple[list[dict], str, Any, Any]]:
        """Stream the answer to the last user message: (chat, sources panel, next piece of the spoken reply, status
        line) as it grows; the status line ends with the reply's timing."""
        messages = plain_history(history)
        if not messages or messages[-1]["role"] != "user":
            yield list(history or []), gr.skip(), gr.skip(), gr.skip()
            return
        with self._lock:
            heard = self._heard.pop(self._tab(request), None)
        started = heard[0] if heard else time.perf_counter()
        timing = TurnTiming(speech_to_text_s=heard[1] if heard else None)
        stop = self._new_stop_event(request)
        earlier, question = messages[:-1], messages[-1]["content"]
        chat = list(history) + [{"role": "assistant", "content": ""}]
        reply, shown_sources = "", None
        running = threading.Event()
        running.set()
        voice_out = (SpokenReply(self.tts, voice or self.voice, started, self.piece_rules,
                                 running if self.hold_decoder else None)
                     if speak and self.tts is not None else None)

        flush_at: list = []  # (when, sample rate) of each sample of silence due after the last streamed piece

        def sent(audio) -> Any:
            """``audio`` for the page's audio output (or the silence due after the last piece), noting when the
            reply's first sound went out."""
            now = time.perf_counter()
            if audio is None and flush_at and now >= flush_at[0][0]:
                return flush_at.pop(0)[1], np.zeros(1, dtype=np.int16)
            if audio is not None:
                if timing.first_audio_s is None:
                    timing.first_audio_s = now - started
                flushes = self.flushes if self.stream_audio else 0
                flush_at[:] = [(now + FLUSH_AFTER_S * (k + 1), audio[0]) for k in range(flushes)]
            return audio

        try:
            yield list(chat), SEARCHING, None, gr.skip()
            for reply, hits in self.session.respond(question, earlier, stop_event=stop,
                                                    temperature=float(temperature),
                                                    max_new_tokens=int(max_new_tokens), running=running):
                if timing.memories_s is None:
                    timing.memories_s = time.perf_counter() - started
                chat[-1] = {"role": "assistant", "content": reply}
                if reply and timing.first_token_s is None:
                    timing.first_token_s = time.perf_counter() - started
                audio = None
                if voice_out is not None:
                    voice_out.feed(reply)
                    audio = sent(voice_out.ready()) if self.stream_audio else None
                if shown_sources is None:
                    shown_sources = sources_markdown(hits)
                    yield list(chat), shown_sources, audio, gr.skip()
                else:
                    yield list(chat), gr.skip(), audio, gr.skip()
            if not reply.strip():
                chat[-1] = {"role": "assistant",
                            "content": "_(stopped before any text)_" if stop.is_set() else "_(no reply text)_"}
            audio = None
            if voice_out is not None and not stop.is_set():
                # Streamed, each piece goes out as soon as it is synthesised, even when the text was done first;
                # without ffmpeg the page plays the spoken reply whole, so it goes out once, at the end.
                if self.stream_audio:
                    for audio in voice_out.finish(reply, FLUSH_AFTER_S):
                        if (audio := sent(audio)) is not None:
                            yield chat, gr.skip(), audio, gr.skip()
                    audio = None
                else:
                    audio = sent(join_chunks(voice_out.finish(reply)))
            stats = self.session.model.last_stats
            timing.prompt_tokens, timing.reused_tokens = stats.prompt_tokens, stats.reused_tokens
            timing.decode_tokens_per_s = stats.decode_tokens_per_s
            if voice_out is not None:
                timing.first_piece_s, timing.first_clip_s = voice_out.first_piece_s, voice_out.first_clip_s
                timing.first_piece = voice_out.pieces[0] if voice_out.pieces else ""
            self.last_timing = timing
            status = " · ".join(self.status + [timing.line()])
            yield chat, shown_sources or sources_markdown([]), audio, status
        finally:
            running.set()  # a reply given up while its first piece is synthesised must not leave the model waiting
            if voice_out is not None:
                voice_out.close()
            with self._lock:  # one event per reply in flight, not one per tab ever opened
                if self._stops.get(self._tab(request)) is stop:
                    del self._stops[self._tab(request)]

    def stop(self, request: gr.Request | None = None) -> None:
        with self._lock:
            event = self._stops.get(self._tab(request))
        if event is not None:
            event.set()

    def transcribe(self, audio: str | tuple | None, request: gr.Request | None = None) -> tuple[str, None]:
        """Speech to text into the message box (and the recorder cleared for the next take). The recording's
        arrival is where the reply's voice-to-voice time starts."""
        heard = time.perf_counter()
        if audio is None:
            raise gr.Error("No audio received.")
        if self.stt is None:
            raise gr.Error("Speech to text is not available; see the notice at the top of the page.")
        try:
            text = self.stt.transcribe(audio).strip()
        except Exception as exc:  # an unreadable recording is the user's to fix, worded for the page
            log.warning("speech to text failed", exc_info=True)
            raise gr.Error(hide_paths(f"Could not transcribe the recording: {exc}")) from exc
        if not text:
            raise gr.Error("No speech was recognised in the recording.")
        with self._lock:
            self._heard[self._tab(request)] = (heard, time.perf_counter() - heard)
        return text, None

    def clear(self, request: gr.Request | None = None) -> tuple[list, str, None]:
        self.stop(request)
        return [], NO_SOURCES, None


PAGE_CSS = """
#notice {border-left: 4px solid #d97706; padding-left: 0.8em;}
#status {font-size: 0.9em; opacity: 0.8;}
"""


def build_app(page: ChatPage, temperature: float = 0.7, max_new_tokens: int = 256,
              title: str = "RhizomeML chat", max_upload_mb: float | None = None) -> gr.Blocks:
    """The page; ``max_upload_mb`` is only named in the recorder's label (``launch`` enforces it)."""
    limit = f"up to {max_upload_mb:g} MB, " if max_upload_mb else ""
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=CACHE_SWEEP_SECONDS) as app:
        gr.Markdown(f"## {title}")
        gr.Markdown("\n".join(f"- {line}" for line in page.notices), elem_id="notice", visible=bool(page.notices))
        # Visible even when empty: each reply ends it with its timing.
        status = gr.Markdown(" · ".join(page.status), elem_id="status")
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(elem_id="chatbot", label="Conversation", height=480, buttons=["copy"],
                                     feedback_options=None)
                with gr.Row():
                    message = gr.Textbox(elem_id="message", show_label=False, scale=5, lines=1, max_lines=6,
                                         placeholder="Type a message and press Enter")
                    send = gr.Button("Send", elem_id="send", variant="primary", scale=1, min_width=80)
                    stop = gr.Button("Stop", elem_id="stop", variant="stop", scale=1, min_width=80)
                voice_in = gr.Audio(sources=["microphone", "upload"], type="filepath", elem_id="voice-input",
                                    label=f"Speak or upload audio ({limit}sent when transcribed)",
                                    visible=page.stt is not None)
                clear = gr.Button("Clear conversation", elem_id="clear", size="sm")
            with gr.Column(scale=2):
                sources = gr.Markdown(NO_SOURCES, elem_id="sources", container=True)
                # Streaming: each piece of the reply plays as soon as it is synthesised, not the whole at the end.
                spoken = gr.Audio(label="Spoken reply", elem_id="spoken-reply", autoplay=True, interactive=False,
                                  streaming=page.stream_audio, visible=page.tts is not None)
                with gr.Accordion("Settings", open=True):
                    speak = gr.Checkbox(page.speak, label="Speak replies", elem_id="speak",
                                        visible=page.tts is not None)
                    voice = gr.Dropdown(list(page.tts.voices) if page.tts else [], value=page.voice or None,
                                        label="Voice", elem_id="voice", visible=page.tts is not None)
                    temp = gr.Slider(0.0, 1.5, value=temperature, step=0.05, label="Temperature",
                                     elem_id="temperature")
                    tokens = gr.Slider(16, MAX_TOKENS_LIMIT, value=max_new_tokens, step=16, label="Max new tokens",
                                       elem_id="max-tokens")

        reply_inputs = [chatbot, temp, tokens, speak, voice]
        reply_outputs = [chatbot, sources, spoken, status]
        for trigger in (message.submit, send.click):
            trigger(page.add_user_message, [message, chatbot], [message, chatbot], queue=False,
                    api_visibility="private").then(page.reply, reply_inputs, reply_outputs, api_visibility="private")
        for trigger in (voice_in.stop_recording, voice_in.upload):
            (trigger(page.transcribe, voice_in, [message, voice_in], api_visibility="private")
             .success(page.add_user_message, [message, chatbot], [message, chatbot], queue=False,
                      api_visibility="private")
             .then(page.reply, reply_inputs, reply_outputs, api_visibility="private"))
        stop.click(page.stop, None, None, queue=False, api_visibility="private")
        clear.click(page.clear, None, [chatbot, sources, spoken], queue=False, api_visibility="private")
    return app

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
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Sequence

import gradio as gr
import numpy as np

from rhizome.chat.retrieval import plain_text
from rhizome.chat.session import ChatSession, format_sources
from rhizome.chat.tts import join_with_pauses
from rhizome.log import get_logger

log = get_logger(__name__)

NO_SOURCES = "_No memories used yet._"
SEARCHING = "_Searching memory…_"
SOURCES_HEADER = "**Memories used for this reply**\n\n"
MAX_TOKENS_LIMIT = 2048
# Spoken replies: text goes to the voice in pieces of at least this many characters, cut after a sentence.
MIN_SPOKEN_CHARS = 60
SENTENCE_END = re.compile(r"[.!?](?=\s)|\n")
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


class SpokenReply:
    """Speaks a reply's finished sentences in the background while the rest is still being written,
    so the audio is ready soon after the text rather than one whole synthesis later."""

    def __init__(self, tts, voice: str = ""):
        self.tts = tts
        self.voice = voice or None
        self.handed_over = 0  # characters of the reply already given to the voice
        self.clips: list[Future] = []
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chat-tts")

    def feed(self, reply: str) -> None:
        end = speakable_end(reply, self.handed_over)
        if end - self.handed_over >= MIN_SPOKEN_CHARS:
            self.clips.append(self.pool.submit(self.tts.speak, reply[self.handed_over:end], self.voice))
            self.handed_over = end

    def finish(self, reply: str) -> tuple[int, np.ndarray] | None:
        """The whole reply as (sample rate, int16 samples); None (with a warning) when speaking failed."""
        rest = reply[self.handed_over:]
        if rest.strip():
            self.clips.append(self.pool.submit(self.tts.speak, rest, self.voice))
            self.handed_over = len(reply)
        try:
            clips = [clip.result() for clip in self.clips]
        except Exception as exc:  # a voice engine failure must not lose the text reply
            log.warning("text to speech failed: %s", exc)
            gr.Warning(hide_paths(f"Could not speak the reply: {exc}"))
            return None
        clips = [(rate, samples) for rate, samples in clips if len(samples)]
        if not clips:
            return None
        rate = clips[0][0]
        return rate, join_with_pauses([samples for _, samples in clips], rate)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def speakable_end(text: str, start: int) -> int:
    """Where the last finished sentence after ``start`` ends (``start`` if none), outside code blocks.

    A sentence counts as finished once whitespace follows its . ! ? (so the "3." of "3.5" is no end)
    or at a line break; text inside an unclosed ``` block waits until the block closes."""
    end = start
    for match in SENTENCE_END.finditer(text, start):
        if text.count("```", 0, match.end()) % 2 == 0:
            end = match.end()
    return end


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
        self._stops: dict[str, threading.Event] = {}
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
              voice: str = "", request: gr.Request | None = None) -> Iterator[tuple[list[dict], str, Any]]:
        """Stream the answer to the last user message: (chat, sources panel, spoken reply) as it grows."""
        messages = plain_history(history)
        if not messages or messages[-1]["role"] != "user":
            yield list(history or []), gr.skip(), gr.skip()
            return
        stop = self._new_stop_event(request)
        earlier, question = messages[:-1], messages[-1]["content"]
        chat = list(history) + [{"role": "assistant", "content": ""}]
        reply, shown_sources = "", None
        voice_out = SpokenReply(self.tts, voice or self.voice) if speak and self.tts is not None else None
        try:
            yield list(chat), SEARCHING, None
            for reply, hits in self.session.respond(question, earlier, stop_event=stop,
                                                    temperature=float(temperature),
                                                    max_new_tokens=int(max_new_tokens)):
                chat[-1] = {"role": "assistant", "content": reply}
                if voice_out is not None:
                    voice_out.feed(reply)
                if shown_sources is None:
                    shown_sources = sources_markdown(hits)
                    yield list(chat), shown_sources, None
                else:
                    yield list(chat), gr.skip(), None
            if not reply.strip():
                chat[-1] = {"role": "assistant",
                            "content": "_(stopped before any text)_" if stop.is_set() else "_(no reply text)_"}
            audio = voice_out.finish(reply) if voice_out is not None and not stop.is_set() else None
            yield chat, shown_sources or sources_markdown([]), audio
        finally:
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

    def transcribe(self, audio: str | tuple | None) -> tuple[str, None]:
        """Speech to text into the message box (and the recorder cleared for the next take)."""
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
        gr.Markdown(" · ".join(page.status), elem_id="status", visible=bool(page.status))
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
                spoken = gr.Audio(label="Spoken reply", elem_id="spoken-reply", autoplay=True, interactive=False,
                                  visible=page.tts is not None)
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
        reply_outputs = [chatbot, sources, spoken]
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

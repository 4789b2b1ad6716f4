"""Putting the chat page on the network safely: speech parts, host, port, sharing and login.

The page binds 127.0.0.1 unless ``--host`` says otherwise, shares a public link only with
``--share``, and serves no files but its own (Gradio's ``allowed_paths`` is left empty, so
nothing outside Gradio's upload cache can be read through the page).
"""

from __future__ import annotations

import socket

from rhizome.chat.audio import SpeechUnavailable
from rhizome.chat.config import ChatConfig
from rhizome.chat.stt import load_stt
from rhizome.chat.tts import load_tts
from rhizome.log import get_logger

log = get_logger(__name__)

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


class ServeError(RuntimeError):
    pass


def parse_auth(value: str) -> tuple[str, str] | None:
    """``"user:password"`` -> ``("user", "password")``; ``""`` -> no login."""
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ServeError("--auth must look like user:password (both parts non-empty)")
    return user, password


def load_speech(config: ChatConfig, device: str = "cpu"):
    """(transcriber or None, speaker or None, notices): a missing or failing part becomes a notice, never an error."""
    notices: list[str] = []
    stt = tts = None
    if config.stt != "none":
        try:
            stt = load_stt(config.stt, whisper_model=config.whisper_model, vosk_model=config.vosk_model,
                           device=device)
        except SpeechUnavailable as exc:
            notices.append(f"**Voice input is off**: {exc}")
        except Exception as exc:  # a broken speech engine must not take the text chat down with it
            log.warning("speech to text failed to load", exc_info=True)
            notices.append(f"**Voice input is off**: {config.stt} failed to load ({exc}).")
    if config.tts != "none":
        try:
            tts = load_tts(config.tts, config.voice, voices_file=config.voices_file)
        except SpeechUnavailable as exc:
            notices.append(f"**Spoken replies are off**: {exc}")
        except Exception as exc:
            log.warning("text to speech failed to load", exc_info=True)
            notices.append(f"**Spoken replies are off**: {config.tts} failed to load ({exc}).")
    return stt, tts, notices


def describe_setup(session, stt=None, tts=None) -> list[str]:
    """What the page runs on, one line each: adapter, model, memory, speech."""
    speech = [f"Speech in: {stt.name}." if stt is not None else "Speech in: off.",
              f"Speech out: {tts.name}." if tts is not None else "Speech out: off."]
    return list(session.notes) + speech


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def check_serving(config: ChatConfig) -> tuple[str, str] | None:
    """Settings errors before anything slow is loaded: the login's form, a busy port. Returns the login."""
    auth = parse_auth(config.auth)
    if not port_is_free(config.host, config.port):
        raise ServeError(f"port {config.port} on {config.host} is in use; pick another with --port")
    return auth


def launch(app, config: ChatConfig) -> tuple[str, str | None]:
    """Serve the page in the background; returns (local URL, public link or None). ``app.block_thread()`` waits."""
    from rhizome.chat.app import PAGE_CSS

    auth = check_serving(config)
    if config.host not in LOCAL_HOSTS and auth is None:
        log.warning("serving on %s without --auth: anyone who can reach this machine can use the chat", config.host)
    if config.share and auth is None:
        log.warning("--share without --auth: anyone with the public link can use the chat and its memories")
    app.queue(default_concurrency_limit=1)
    _, url, share_url = app.launch(
        server_name=config.host, server_port=config.port, share=config.share, auth=auth,
        auth_message="RhizomeML chat: log in with the --auth user and password" if auth else None,
        prevent_thread_lock=True, quiet=True, show_error=True, ssr_mode=False, mcp_server=False,
        footer_links=[], css=PAGE_CSS, inbrowser=False,
    )
    return url, share_url

"""Putting the chat page on the network safely: speech parts, host, port, sharing, uploads and login.

The page binds 127.0.0.1 unless ``--host`` says otherwise, shares a public link only with
``--share``, and serves no files but its own (Gradio's ``allowed_paths`` is left empty, so
nothing outside Gradio's upload cache can be read through the page). Uploads are capped at
``--max-upload-mb``. A login comes from ``--auth``, ``--auth-file`` or ``RHIZOME_AUTH``; passwords
are never printed, and each failed attempt for a user name makes the next one wait longer.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import socket
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Mapping, Sequence

from rhizome.chat.audio import SpeechUnavailable
from rhizome.chat.config import ChatConfig
from rhizome.chat.stt import load_stt
from rhizome.chat.tts import load_tts
from rhizome.errors import UserError
from rhizome.log import get_logger

log = get_logger(__name__)

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
AUTH_ENV = "RHIZOME_AUTH"
MIB = 1024 * 1024  # Gradio's "MB", and how its page prints the upload limit


class ServeError(UserError, RuntimeError):
    pass


def parse_auth(value: str, where: str = "--auth") -> tuple[str, str] | None:
    """``"user:password"`` -> ``("user", "password")``; ``""`` -> no login. Errors never repeat the value."""
    if not value:
        return None
    user, sep, password = value.partition(":")
    user = user.strip()  # as Gradio's login form strips the name typed
    if not sep or not user or not password:
        raise ServeError(f"{where} must look like user:password (both parts non-empty)")
    return user, password


def read_auth_file(path: str | os.PathLike) -> dict[str, str]:
    """The logins of an ``--auth-file``: one ``user:password`` a line; blank lines and ``#`` comments skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ServeError(f"cannot read --auth-file {path}: {exc}") from None
    logins: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, password = parse_auth(line, where=f"line {number} of --auth-file {path}")
        if user in logins:
            raise ServeError(f"line {number} of --auth-file {path}: user {user!r} is listed twice")
        logins[user] = password
    if not logins:
        raise ServeError(f"--auth-file {path} lists no user:password line")
    return logins


def load_logins(config: ChatConfig, environ: Mapping[str, str] = os.environ) -> tuple[dict[str, str], str] | None:
    """(user -> password, where they came from), or None when the page needs no login.

    ``--auth`` or ``--auth-file`` (not both) win over the ``RHIZOME_AUTH`` environment variable."""
    if config.auth and config.auth_file:
        raise ServeError("give either --auth or --auth-file, not both")
    if config.auth:
        return dict([parse_auth(config.auth)]), "--auth"
    if config.auth_file:
        return read_auth_file(config.auth_file), f"--auth-file {config.auth_file}"
    if environ.get(AUTH_ENV):
        return dict([parse_auth(environ[AUTH_ENV], where=AUTH_ENV)]), AUTH_ENV
    return None


def auth_on_command_line(argv: Sequence[str]) -> bool:
    """Whether ``argv`` spells out a password (``--auth user:password``), which any local user can read in ps."""
    return any(arg == "--auth" or arg.startswith("--auth=") for arg in argv)


class LoginGuard:
    """Gradio's login check, slowed for guessing: after n failed attempts in a row for a user name, each
    attempt for that name waits ``first_delay * 2**(n-1)`` seconds (at most ``max_delay``) before the
    password is checked, so even a correct one arrives only after the wait and a fast answer gives
    nothing away. A success resets the count. The wait is an ``asyncio.sleep``: Gradio awaits a coroutine
    login check on its event loop, so waiting attempts hold no thread."""

    def __init__(self, logins: Mapping[str, str], first_delay: float = 1.0, max_delay: float = 30.0,
                 remembered_names: int = 1024):
        self.logins = {user: password.encode("utf-8") for user, password in logins.items()}
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.remembered_names = remembered_names  # names guessed at random must not grow the table forever
        self.failures: OrderedDict[str, int] = OrderedDict()

    def delay(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        return min(self.max_delay, self.first_delay * 2 ** min(failures - 1, 32))

    async def check(self, username: str, password: str) -> bool:
        await asyncio.sleep(self.delay(self.failures.get(username, 0)))
        expected = self.logins.get(username)
        # Compared even for an unknown name, so the time taken does not say which names exist.
        matches = hmac.compare_digest(password.encode("utf-8"), expected or b"\0")
        if expected is not None and matches:
            self.failures.pop(username, None)
            return True
        failures = self.failures.pop(username, 0) + 1
        self.failures[username] = failures
        while len(self.failures) > self.remembered_names:
            self.failures.popitem(last=False)
        if failures & (failures - 1) == 0:  # 1, 2, 4, 8 ...: noticed without flooding the console
            log.warning("%d failed login(s) in a row for user %r; the next attempt waits %.0f s",
                        failures, username, self.delay(failures))
        return False


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


def check_serving(config: ChatConfig) -> tuple[dict[str, str], str] | None:
    """Settings errors before anything slow is loaded: the login's form, the upload limit, a busy port.
    Returns the logins and where they came from (None: no login)."""
    logins = load_logins(config)
    if not config.max_upload_mb > 0:
        raise ServeError(f"--max-upload-mb must be above 0 (got {config.max_upload_mb})")
    if not port_is_free(config.host, config.port):
        raise ServeError(f"port {config.port} on {config.host} is in use; pick another with --port")
    return logins


def check_command_line(config: ChatConfig, argv: Sequence[str] | None = None) -> None:
    """A page script's checks before anything slow is loaded: a warning on stderr when ``argv`` (default: this
    process's arguments) spells out a password, then ``check_serving``'s errors."""
    if auth_on_command_line(sys.argv[1:] if argv is None else argv):
        print(f"warning: --auth puts the password on the command line, where any user of this machine can read it "
              f"(ps); use --auth-file FILE or the {AUTH_ENV} environment variable instead", file=sys.stderr)
    check_serving(config)


def launch(app, config: ChatConfig) -> tuple[str, str | None]:
    """Serve the page in the background; returns (local URL, public link or None). ``app.block_thread()`` waits."""
    from rhizome.chat.app import PAGE_CSS

    logins = check_serving(config)
    if config.host not in LOCAL_HOSTS and logins is None:
        log.warning("serving on %s without a login (--auth-file, %s): anyone who can reach this machine can use "
                    "the chat", config.host, AUTH_ENV)
    if config.share and logins is None:
        log.warning("--share without a login (--auth-file, %s): anyone with the public link can use the chat "
                    "and its memories", AUTH_ENV)
    if logins is not None:
        log.info("login required: %d user(s) from %s", len(logins[0]), logins[1])
    app.queue(default_concurrency_limit=1)
    # show_error=False: an unexpected exception's text (file paths, library internals) stays in the terminal;
    # the page shows only the messages the handlers word for it (gr.Error).
    _, url, share_url = app.launch(
        server_name=config.host, server_port=config.port, share=config.share,
        auth=LoginGuard(logins[0]).check if logins else None,
        auth_message="RhizomeML chat: log in with the user and password the page was started with"
        if logins else None,
        max_file_size=int(config.max_upload_mb * MIB),
        prevent_thread_lock=True, quiet=True, show_error=False, ssr_mode=False, mcp_server=False,
        footer_links=[], css=PAGE_CSS, inbrowser=False,
    )
    return url, share_url

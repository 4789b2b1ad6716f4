"""Serving the chat page: local binding, login, busy ports, and no file reads outside Gradio's cache."""

import asyncio
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import gradio as gr
import httpx
import pytest

from rhizome.chat.config import ChatConfig
from rhizome.chat.server import AUTH_ENV, LoginGuard, ServeError, launch, load_logins, parse_auth

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def serve():
    apps = []

    def start(**settings):
        with gr.Blocks(analytics_enabled=False) as app:
            gr.Markdown("hello")
        apps.append(app)
        return launch(app, ChatConfig(port=free_port(), **settings))[0]

    yield start
    for app in apps:
        app.close()


def test_page_binds_localhost_and_serves_no_project_or_system_files(serve, tmp_path):
    url = serve()
    assert url.startswith("http://127.0.0.1:")
    assert status_of(url) == 200 and status_of(f"{url}config") == 200
    uploaded = httpx.post(f"{url}gradio_api/upload", files={"files": ("take.txt", b"hello")}).json()[0]
    assert status_of(f"{url}gradio_api/file={uploaded}") == 200, "the file route itself works for uploads"
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the browser")
    for path in (ROOT / "memory_config.json", ROOT / "rhizome" / "chat" / "config.py", Path("/etc/passwd"), secret):
        assert status_of(f"{url}gradio_api/file={path}") in (403, 404), path


def test_auth_requires_a_login(serve):
    url = serve(auth="me:secret")
    assert status_of(f"{url}config") == 401
    with pytest.raises(ServeError, match="user:password"):
        parse_auth("no-colon")
    assert parse_auth("me:pass:word") == ("me", "pass:word") and parse_auth("") is None


def test_a_busy_port_is_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServeError, match=f"port {port}.*--port"):
            launch(gr.Blocks(), ChatConfig(port=port))


def test_login_from_the_environment_or_a_file_keeps_the_password_out_of_the_command_line(tmp_path):
    assert load_logins(ChatConfig(), environ={}) is None
    assert load_logins(ChatConfig(), environ={AUTH_ENV: "me:pass word"}) == ({"me": "pass word"}, AUTH_ENV)
    logins = tmp_path / "logins.txt"
    logins.write_text("# who may chat\nme:hunter2\n\n  you:pass:word with spaces\r\n", encoding="utf-8")
    config = ChatConfig(auth_file=str(logins))
    assert load_logins(config, environ={AUTH_ENV: "env:ignored"}) == (
        {"me": "hunter2", "you": "pass:word with spaces"}, f"--auth-file {logins}")
    assert load_logins(ChatConfig(auth="me:flag"), environ={AUTH_ENV: "env:x"}) == ({"me": "flag"}, "--auth")

    logins.write_text("me:hunter2\nyou-without-password\n", encoding="utf-8")
    with pytest.raises(ServeError, match=f"line 2 of --auth-file {logins}.*user:password") as error:
        load_logins(config)
    assert "hunter2" not in str(error.value)
    with pytest.raises(ServeError, match="either --auth or --auth-file"):
        load_logins(ChatConfig(auth="me:x", auth_file=str(logins)))
    with pytest.raises(ServeError, match=f"cannot read --auth-file {tmp_path / 'missing.txt'}"):
        load_logins(ChatConfig(auth_file=str(tmp_path / "missing.txt")))
    with pytest.raises(ServeError, match=f"{AUTH_ENV} must look like user:password"):
        load_logins(ChatConfig(), environ={AUTH_ENV: "no-colon"})


def login(url: str, user: str, password: str) -> tuple[bool, float]:
    start = time.monotonic()
    response = httpx.post(f"{url}login", data={"username": user, "password": password}, timeout=60)
    return response.status_code == 200 and response.json().get("success") is True, time.monotonic() - start


def test_login_file_and_environment_protect_the_served_page(serve, tmp_path, monkeypatch):
    logins = tmp_path / "logins.txt"
    logins.write_text("me:hunter2\n", encoding="utf-8")
    url = serve(auth_file=str(logins))
    assert status_of(f"{url}config") == 401
    assert login(url, "me", "hunter2")[0]

    monkeypatch.setenv(AUTH_ENV, "you:pass word")
    url = serve()
    assert status_of(f"{url}config") == 401
    assert login(url, "you", "pass word")[0] and not login(url, "me", "hunter2")[0]


def test_each_failed_login_makes_the_next_attempt_wait_longer_and_the_right_password_still_works(serve):
    url = serve(auth="me:secret")
    assert login(url, "me", "guess1") == (False, pytest.approx(0, abs=0.9))
    ok, waited = login(url, "me", "guess2")
    assert not ok and waited >= 1.0
    ok, waited = login(url, "me", "secret")
    assert ok and waited >= 2.0, "after two failures the right password is checked only after the wait"
    assert login(url, "me", "guess3") == (False, pytest.approx(0, abs=0.9)), "a success resets the count"


def test_login_delays_double_up_to_a_cap_per_user_name():
    guard = LoginGuard({"me": "secret"}, first_delay=0.05, max_delay=0.2)

    def attempt(user: str, password: str) -> tuple[bool, float]:
        start = time.monotonic()
        return asyncio.run(guard.check(user, password)), time.monotonic() - start

    waits = [attempt("me", "wrong")[1] for _ in range(5)]
    assert waits[0] < 0.05
    for waited, expected in zip(waits[1:], (0.05, 0.1, 0.2, 0.2)):
        assert expected <= waited < expected + 0.15
    assert attempt("you", "wrong")[1] < 0.05, "another user name is not slowed by these failures"
    ok, waited = attempt("me", "secret")
    assert ok and waited >= 0.2
    assert attempt("me", "wrong")[1] < 0.05

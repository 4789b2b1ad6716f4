"""Serving the chat page: local binding, login, busy ports, and no file reads outside Gradio's cache."""

import socket
import urllib.error
import urllib.request
from pathlib import Path

import gradio as gr
import httpx
import pytest

from rhizome.chat.config import ChatConfig
from rhizome.chat.server import ServeError, launch, parse_auth

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

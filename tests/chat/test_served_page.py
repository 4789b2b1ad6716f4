"""The real page served on loopback: no absolute path of this machine in it, uploads capped, uploads deleted
when the page stops."""

import socket
from pathlib import Path

import httpx
import pytest

from rhizome.chat.app import ChatPage, build_app
from rhizome.chat.config import ChatConfig
from rhizome.chat.server import MIB, describe_setup, launch
from rhizome.chat.session import ChatSession
from rhizome.memory.store import VECTORS_FILE


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def session(tiny_chat_model_dir, small_memory_dir) -> ChatSession:
    config = ChatConfig(base_model=tiny_chat_model_dir, adapter="none", memory_dir=str(small_memory_dir),
                        remember=False, stt="none", tts="none")
    return ChatSession.from_config(config)


@pytest.fixture
def serve(session):
    apps = []

    def start(page: ChatPage, **settings) -> str:
        config = ChatConfig(port=free_port(), **settings)
        app = build_app(page, max_upload_mb=config.max_upload_mb)
        apps.append(app)
        return launch(app, config)[0]

    yield start
    for app in apps:
        app.close(verbose=False)


def test_page_and_its_config_name_no_absolute_path(session, serve, tiny_chat_model_dir, small_memory_dir,
                                                   tmp_path_factory):
    status = describe_setup(session)
    assert any(str(small_memory_dir) in line for line in status), "the status line names the memory it uses"
    notice = f"**Voice input is off**: no Vosk model in {small_memory_dir / 'vosk-model'}."
    url = serve(ChatPage(session, notices=[notice], status=status))
    page, config = httpx.get(url).text, httpx.get(f"{url}config").text
    machine_folder = str(tmp_path_factory.getbasetemp())
    for shown in (page, config):
        assert machine_folder not in shown and str(Path.home()) not in shown
    # Outside the working folder a path is its last two names: the memory still says which folder it is.
    assert f"…/{small_memory_dir.name}/{VECTORS_FILE}" in config
    assert f"…/{small_memory_dir.name}/vosk-model." in config
    assert f"…/{Path(tiny_chat_model_dir).parent.name}/{Path(tiny_chat_model_dir).name}" in config


def test_uploads_over_the_limit_are_refused_with_the_limit_named(session, serve):
    assert ChatConfig().max_upload_mb == 25
    url = serve(ChatPage(session))
    assert httpx.get(f"{url}config").json()["max_file_size"] == 25 * MIB

    url = serve(ChatPage(session), max_upload_mb=0.01)
    limit = int(0.01 * MIB)
    config = httpx.get(f"{url}config").json()
    assert config["max_file_size"] == limit, "Gradio's page refuses a larger file before sending it"
    labels = [c["props"].get("label", "") for c in config["components"] if c["props"].get("elem_id") == "voice-input"]
    assert labels and "up to 0.01 MB" in labels[0]
    refused = httpx.post(f"{url}gradio_api/upload", files={"files": ("long.wav", b"\0" * (limit + 1))})
    assert refused.status_code == 413 and f"maximum allowed size of {limit} bytes" in refused.text
    accepted = httpx.post(f"{url}gradio_api/upload", files={"files": ("short.wav", b"\0" * limit)})
    assert accepted.status_code == 200


def test_uploaded_recordings_are_deleted_when_the_page_stops(session):
    page = build_app(ChatPage(session))
    url = launch(page, ChatConfig(port=free_port()))[0]
    try:
        take = httpx.post(f"{url}gradio_api/upload", files={"files": ("take.wav", b"RIFF" + b"\0" * 64)}).json()[0]
        assert Path(take).is_file()
    finally:
        page.close(verbose=False)
    assert not Path(take).exists()

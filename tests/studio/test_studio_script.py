"""studio.py: serving errors and the warning for a password on the command line come before anything slow, as
gradio_chat_tts.py's (tests/chat/test_gradio_chat_tts.py)."""

import socket

import studio


def test_a_password_on_the_command_line_is_warned_about_and_a_busy_port_is_a_clear_error(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert studio.main(["--auth", "me:hunter2", "--port", port]) == 2
    err = capsys.readouterr().err
    assert "warning: --auth puts the password on the command line" in err and "RHIZOME_AUTH" in err
    assert f"port {port}" in err and "hunter2" not in err

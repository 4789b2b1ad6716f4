"""The page's script: settings and model errors are one clear line and exit code 2, before anything slow."""

import socket

import gradio_chat_tts


def test_missing_base_model_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "no-such-model"
    code = gradio_chat_tts.main(["--base-model", str(missing), "--adapter", "none", "--stt", "none",
                                 "--tts", "none", "--memory-dir", str(tmp_path), "--port", "0"])
    err = capsys.readouterr().err
    assert code == 2 and str(missing) in err and "Traceback" not in err


def test_bad_login_or_busy_port_fails_before_the_model_loads(tmp_path, capsys):
    assert gradio_chat_tts.main(["--auth", "nopassword", "--memory-dir", str(tmp_path)]) == 2
    assert "user:password" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert gradio_chat_tts.main(["--port", str(port), "--memory-dir", str(tmp_path)]) == 2
    assert f"port {port}" in capsys.readouterr().err


def test_a_password_on_the_command_line_is_warned_about_and_never_echoed(tmp_path, capsys):
    with socket.socket() as taken:  # a busy port stops the run right after the login is checked
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert gradio_chat_tts.main(["--auth", "me:hunter2", "--port", port, "--memory-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "warning: --auth puts the password on the command line" in err and "RHIZOME_AUTH" in err
        assert "hunter2" not in err
        (tmp_path / "logins.txt").write_text("me:hunter2\n")
        assert gradio_chat_tts.main(["--auth-file", str(tmp_path / "logins.txt"), "--port", port,
                                     "--memory-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "warning" not in err and f"port {port}" in err

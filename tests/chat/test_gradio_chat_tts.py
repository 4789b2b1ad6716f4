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

"""The project's own set-up promises: requirements.txt and pyproject.toml agree, nothing pulls CUDA."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _requirements(name: str = "requirements.txt") -> list[str]:
    lines = (ROOT / name).read_text().splitlines()
    return sorted(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def test_requirement_files_match_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert _requirements() == sorted(project["dependencies"])
    assert _requirements("requirements-dev.txt") == sorted(project["optional-dependencies"]["dev"])


def test_torch_is_pinned_to_the_cpu_build_release():
    assert "torch==2.13.0" in _requirements()
    assert not [r for r in _requirements() if r.startswith(("nvidia-", "torchvision", "torchaudio"))]


def test_every_top_level_script_is_a_thin_entry_point():
    for script in ("pdf_to_json.py", "batch_embedder.py", "data_formatter.py", "train_script.py",
                   "gradio_chat_tts.py", "UCS_v3_4_1.py", "evaluate.py", "export_model.py", "studio.py", "tune.py"):
        text = (ROOT / script).read_text()
        assert "from rhizome" in text
        assert len(text.splitlines()) < 80, f"{script} holds logic that belongs in rhizome/"

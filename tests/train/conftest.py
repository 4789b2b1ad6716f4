"""Training fixtures: the fixture data (SmolLM2's tokenizer and the tiny model come from tests/conftest.py)."""

import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """A data_finetune/ folder with the fixture train / validation splits."""
    folder = tmp_path / "data_finetune"
    folder.mkdir()
    for name in ("dataset_train.jsonl", "dataset_validation.jsonl"):
        shutil.copy(FIXTURES / name, folder / name)
    return folder

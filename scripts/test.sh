#!/usr/bin/env bash
# Set up (if needed) and run the test suite offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RHIZOME_NO_PROGRESS=1
exec .venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# Set up (if needed) and run the pipeline on the bundled sample data:
# PDFs/ -> pdf_texts.json -> memory (memory_texts.npy, memory_metadata.pkl, memory_index.faiss)
# -> training set (data_finetune/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY=.venv/bin/python
start=$(date +%s)
echo "==> 1/3 PDFs -> pdf_texts.json"
$PY pdf_to_json.py PDFs/ -o pdf_texts.json
SOURCES="samples/conversations.json samples/conversations2.json samples/custom_conversations.json samples/chat.jsonl"
echo "==> 2/3 conversations + PDF chunks -> memory"
$PY batch_embedder.py $SOURCES pdf_texts.json
echo "==> your memory answers:"
$PY batch_embedder.py --query "How do I keep a hive from swarming?" --k 3
echo "==> 3/3 memory -> training set in data_finetune/"
$PY data_formatter.py $SOURCES pdf_texts.json --enable-semantic-labeling --extract-keyphrases
echo "==> demo finished in $(( $(date +%s) - start )) s"

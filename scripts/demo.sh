#!/usr/bin/env bash
# The whole pipeline on the bundled sample data, set-up included:
# PDFs/ -> pdf_texts.json -> memory -> data_finetune/ -> a short LoRA run -> evaluation -> summary.
# Every stage is incremental or cached, so a rerun takes seconds per stage.
#   bash scripts/demo.sh           # the pipeline, then how to open the chat page
#   bash scripts/demo.sh --chat    # ... and start the chat page at the end
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY=.venv/bin/python
RUN=SmolLM2-135M-Instruct-finetuned
SOURCES="samples/conversations.json samples/conversations2.json samples/custom_conversations.json samples/chat.jsonl"

echo "==> 1/6 PDFs -> pdf_texts.json"
$PY pdf_to_json.py PDFs/ -o pdf_texts.json
echo "==> 2/6 conversations + PDF chunks -> memory"
$PY batch_embedder.py $SOURCES pdf_texts.json
echo "==> your memory answers:"
$PY batch_embedder.py --query "How do I keep a hive from swarming?" --k 3
echo "==> 3/6 memory -> training set in data_finetune/"
$PY data_formatter.py $SOURCES pdf_texts.json --enable-semantic-labeling --extract-keyphrases
# A short run at a high learning rate: enough to move test perplexity on the samples in a few minutes
# on a laptop CPU; a real run uses the defaults (3 epochs at 5e-5).
echo "==> 4/6 LoRA fine-tuning of SmolLM2-135M-Instruct -> $RUN/ (a rerun resumes or skips)"
$PY train_script.py -o "$RUN" --max-steps 12 --grad-accum 4 --lr 4e-4 --warmup-steps 1 \
    --eval-steps 6 --save-steps 6
echo "==> 5/6 base model vs adapter on the held-out test split; questions from your own data, with and without memories"
$PY evaluate.py "$RUN/final" --output-dir "$RUN" --qa
echo "==> 6/6 summary"
$PY -m rhizome.summary --run-dir "$RUN" --seconds $(( $(date +%s) - start ))
if [ "${1:-}" = "--chat" ]; then
    exec $PY gradio_chat_tts.py
fi

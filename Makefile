.PHONY: demo chat test bench claims tune setup samples

demo:  ## set up .venv if needed and run the whole pipeline on the bundled sample data
	bash scripts/demo.sh

chat:  ## the demo (seconds when it has run before), then the local chat page
	bash scripts/demo.sh --chat

studio: setup  ## the training studio (start, watch, stop, resume, compare runs) at http://127.0.0.1:7861
	HF_HUB_OFFLINE=1 .venv/bin/python studio.py

test:  ## set up .venv if needed and run the test suite (offline)
	bash scripts/test.sh

setup:
	bash scripts/setup.sh

bench: setup  ## benchmarks: ratios measured side by side
	HF_HUB_OFFLINE=1 .venv/bin/python bench/pdf.py
	HF_HUB_OFFLINE=1 .venv/bin/python bench/embed.py
	.venv/bin/python bench/dedup.py
	HF_HUB_OFFLINE=1 .venv/bin/python bench/train.py
	.venv/bin/python bench/index.py
	HF_HUB_OFFLINE=1 .venv/bin/python bench/chat.py
	HF_HUB_OFFLINE=1 .venv/bin/python bench/studio.py
	.venv/bin/python bench/fuzz_inputs.py

claims: setup  ## standard vs theme-weighted vs IPF training on ShareGPT conversations (about 45 min on 2 cores)
	HF_HUB_OFFLINE=1 .venv/bin/python bench/claims.py

tune: setup  ## tune train_script.py's settings on data_finetune/ (tuning/best_config.json, tuning/tuning_report.md)
	HF_HUB_OFFLINE=1 .venv/bin/python tune.py

samples: setup  ## regenerate the bundled sample PDFs and conversation files
	.venv/bin/python samples/make_pdfs.py
	.venv/bin/python samples/make_conversations.py

"""Stage 3, ``data_formatter.py``: conversations and PDF chunks -> a cleaned, deduplicated, themed,
scored and split training set in ``data_finetune/``."""

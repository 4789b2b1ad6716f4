"""The training studio: a local page to start, watch, stop, resume, compare and use training runs (``studio.py``)."""

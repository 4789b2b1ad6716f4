"""Stage 4: LoRA / QLoRA fine-tuning on the formatter's chat JSONL, with theme-weighted sampling and packing.

The loop lives in :mod:`rhizome.train.loop`; the other modules are the small parts it composes:
``model`` (default model, LoRA/QLoRA), ``data`` (chat template -> tokens and assistant-only targets),
``cache`` (tokenisation cache), ``sampler`` (theme-weighted epoch order), ``packing`` (rows without
cross-sample attention), ``tracker`` (theme diversity), ``checkpoint`` (complete, atomic checkpoints)
and ``plots``.
"""

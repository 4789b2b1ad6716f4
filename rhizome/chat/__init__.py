"""Stage 5: a local voice chat over the user's memory, with the adapter training wrote.

``config`` (ChatConfig and the adapter choice), ``retrieval`` (which memories a message gets, how they enter
the prompt, remembering turns), ``llm`` (base + adapter, streamed generation), ``session`` (one chat turn
end to end), ``cli`` (UCS_v3_4_1.py: search, config, terminal chat); the page and speech live in ``app``,
``server``, ``stt``, ``tts`` and ``audio``.
"""

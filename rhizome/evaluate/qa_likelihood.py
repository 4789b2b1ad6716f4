"""How likely the chat's own model finds the gold answer as its reply: a graded QA score that still tells
conditions apart when a small model's greedy answers never contain the gold span.

The prompt is exactly the one the chat session built for the question: :class:`PromptRecorder` stands in for the
session's engine and keeps the messages of each ``stream`` call (what ``ChatSession.respond`` assembled: system
prompt, memory block, chat history fitted to the context), and the engine's own ``prompt_ids`` turns them into
tokens as generation does (chat template, generation prompt). The gold span, tokenised on its own as a reply
starting right after the assistant header, is then teacher-forced after that prompt by the same engine that
answers: CTranslate2's ``Generator.forward_batch`` (int8 on a CPU, as the page runs) or a forward pass of the
PyTorch model.

Per question:
  - ``gold_logprob``: mean log-probability (nats) per token of the gold span; higher is better, 0 is certain;
  - ``gold_top1``: the gold's first token is the model's most likely next token (greedy decoding would start
    the reply with it, repetition penalty aside).
"""

from __future__ import annotations

import numpy as np

from rhizome.chat.engine_ct2 import CT2ChatModel
from rhizome.chat.engine_ort import ORTChatModel
from rhizome.chat.llm import ChatEngine, ChatModel


class PromptRecorder:
    """A chat engine that remembers the messages of its latest ``stream`` call and otherwise is the engine it
    wraps: a session given one in place of its engine shows the prompt its own assembly built."""

    def __init__(self, engine: ChatEngine):
        self.engine = engine
        self.last_messages: list[dict] | None = None

    def __getattr__(self, name: str):
        return getattr(self.engine, name)

    def stream(self, messages: list[dict], **kwargs):
        self.last_messages = messages
        return self.engine.stream(messages, **kwargs)


def next_token_log_probs(engine: ChatEngine, ids: list[int], first: int) -> np.ndarray:
    """Log-probabilities over the vocabulary of the token after each of ``ids[first:-1]``, by ``engine``'s model:
    row i is the distribution of ``ids[first + i + 1]``."""
    if isinstance(engine, CT2ChatModel):
        import ctranslate2

        output = engine.generator.forward_batch([ids], return_log_probs=True)
        return np.asarray(output.to_device(ctranslate2.Device.cpu))[0, first:-1].astype(np.float64)
    if isinstance(engine, ChatModel):
        import torch

        model = engine.model
        with torch.inference_mode():
            logits = model(torch.tensor([ids], device=model.device)).logits[0, first:-1].float()
            return torch.log_softmax(logits, dim=-1).cpu().numpy().astype(np.float64)
    if isinstance(engine, ORTChatModel):
        return engine.next_token_log_probs(ids, first)
    raise TypeError(f"cannot score answers with a {type(engine).__name__}: the QA likelihood needs the chat's "
                    "PyTorch, CTranslate2 or ONNX Runtime GenAI engine")


def gold_likelihood(engine: ChatEngine, messages: list[dict], gold: str) -> dict:
    """``gold_logprob`` and ``gold_top1`` (see the module's docstring) of ``gold`` as the reply to ``messages``."""
    prompt = engine.prompt_ids(messages)[0].tolist()
    answer = engine.tokenizer.encode(gold, add_special_tokens=False)
    if not answer:
        return {"gold_logprob": None, "gold_top1": None}
    log_probs = next_token_log_probs(engine, prompt + answer, len(prompt) - 1)
    picked = log_probs[np.arange(len(answer)), answer]
    return {"gold_logprob": float(picked.mean()), "gold_top1": float(int(log_probs[0].argmax()) == answer[0])}

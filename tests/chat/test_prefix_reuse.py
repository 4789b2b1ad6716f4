"""Prefix reuse across turns: the memories go with the new message, so the conversation so far is a stable prefix;
each engine prefills only what follows it, and its replies are those of a full prefill."""

import os

import pytest

from rhizome.chat.config import ChatConfig
from rhizome.chat.engine_ct2 import CT2ChatModel
from rhizome.chat.llm import ChatModel
from rhizome.chat.retrieval import MEMORY_HEADER, ChatMemory, memory_line
from rhizome.chat.session import ChatSession

os.environ.setdefault("HF_HUB_OFFLINE", "1")

GREEDY = {"max_new_tokens": 16, "temperature": 0, "repetition_penalty": 1.3}
TURN_1 = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How do I split a hive?"}]


def second_turn(reply: str, question: str = "And in autumn?") -> list[dict]:
    return TURN_1 + [{"role": "assistant", "content": reply.strip()}, {"role": "user", "content": question}]


def common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


@pytest.fixture(scope="module")
def torch_model(tiny_chat_model_dir):
    return ChatModel.load(tiny_chat_model_dir, None, device="cpu")


def fresh_torch_reply(model: ChatModel, messages: list[dict]) -> str:
    model._cache, model._cached_ids = None, []  # as a model that never answered before
    reply = "".join(model.stream(messages, **GREEDY))
    assert model.last_stats.reused_tokens == 0
    return reply


def test_torch_prefills_only_what_follows_the_last_turn_and_replies_the_same(torch_model):
    first = "".join(torch_model.stream(TURN_1, **GREEDY))
    assert torch_model.last_stats.reused_tokens == 0 and first.strip()
    turn_2 = second_turn(first)
    cached = torch_model._cached_ids
    reply = "".join(torch_model.stream(turn_2, **GREEDY))
    stats = torch_model.last_stats
    prompt = torch_model.prompt_ids(turn_2)[0].tolist()
    # Everything the first turn computed that the new prompt starts with: at least the whole first prompt.
    assert stats.reused_tokens == common_prefix(cached, prompt) >= len(torch_model.prompt_ids(TURN_1)[0])
    assert reply == fresh_torch_reply(torch_model, turn_2)


def test_torch_reprefills_from_where_an_edited_history_differs(torch_model):
    first = "".join(torch_model.stream(TURN_1, **GREEDY))
    edited = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How do I split a nuc?"},
              {"role": "assistant", "content": first.strip()}, {"role": "user", "content": "And in autumn?"}]
    cached = torch_model._cached_ids
    reply = "".join(torch_model.stream(edited, **GREEDY))
    reused = torch_model.last_stats.reused_tokens
    assert 0 < reused == common_prefix(cached, torch_model.prompt_ids(edited)[0].tolist()) \
        < len(torch_model.prompt_ids(TURN_1)[0])
    assert reply == fresh_torch_reply(torch_model, edited)
    other = [{"role": "system", "content": "Be long."}, {"role": "user", "content": "Something else entirely"}]
    cached = torch_model._cached_ids
    "".join(torch_model.stream(other, **GREEDY))
    # Only the template's opening tokens are shared ("<|im_start|>system\nBe"): the rest is prefilled.
    assert torch_model.last_stats.reused_tokens == common_prefix(cached, torch_model.prompt_ids(other)[0].tolist()) < 5


@pytest.fixture(scope="module")
def ct2_model(tiny_chat_model_dir, models_dir):
    return CT2ChatModel.load(tiny_chat_model_dir, None, quantization="float32")


def test_ct2_starts_the_next_turn_from_the_prefix_computed_ahead(ct2_model, tiny_chat_model_dir):
    first = "".join(ct2_model.stream(TURN_1, **GREEDY))
    assert ct2_model.last_stats.reused_tokens == 0 and first.strip()
    turn_2 = second_turn(first)
    ct2_model.prepare(turn_2[:-1])
    ct2_model.wait_prepared()
    reply = "".join(ct2_model.stream(turn_2, **GREEDY))
    prefix = ct2_model.prompt_ids(turn_2[:-1], add_generation_prompt=False)[0].tolist()
    assert prefix == ct2_model.prompt_ids(turn_2)[0].tolist()[:len(prefix)]
    assert ct2_model.last_stats.reused_tokens == len(prefix)
    fresh = CT2ChatModel.load(tiny_chat_model_dir, None, quantization="float32")
    assert reply == "".join(fresh.stream(turn_2, **GREEDY)) and fresh.last_stats.reused_tokens == 0
    # A prompt that does not start with a stored prefix is prefilled whole.
    "".join(ct2_model.stream(second_turn(first, "Why?")[:1] + [{"role": "user", "content": "Why?"}], **GREEDY))
    assert ct2_model.last_stats.reused_tokens == 0


def test_ct2_frees_stored_prefixes_past_the_cap_by_loading_afresh(ct2_model, monkeypatch):
    import rhizome.chat.engine_ct2 as engine_ct2

    monkeypatch.setattr(engine_ct2, "PREFIX_CACHE_TOKENS", 60)
    before = ct2_model.generator
    for question in ("One?", "Two, a longer question than the first one?", "Three?"):
        ct2_model.prepare(TURN_1 + [{"role": "assistant", "content": question}])
        ct2_model.wait_prepared()
    assert ct2_model.generator is not before
    assert sum(map(len, ct2_model._prefixes)) <= 60


@pytest.mark.slow
def test_memories_go_with_their_message_and_stay_there_in_later_turns(torch_model, small_memory_dir):
    config = ChatConfig(memory_dir=str(small_memory_dir), remember=False, min_score=0.1, k=2, **GREEDY)
    session = ChatSession(config, torch_model, ChatMemory.from_config(config, count_tokens=torch_model.count_tokens))
    prompts = []
    original = torch_model.stream

    def recording(messages, **kwargs):  # this instance only: the real model still answers
        prompts.append(messages)
        return original(messages, **kwargs)

    torch_model.stream = recording
    try:
        *_, (first, hits) = session.respond("My bike chain skips, what should I check?", [])
        assert hits and first.strip()
        history = [{"role": "user", "content": "My bike chain skips, what should I check?"},
                   {"role": "assistant", "content": first}]
        *_, (second, again) = session.respond("What about the chain wear?", history)
        third_history = history + [{"role": "user", "content": "What about the chain wear?"},
                                   {"role": "assistant", "content": second}]
        list(session.respond("Thanks!", third_history))
    finally:
        del torch_model.stream
    turn_1, turn_2, turn_3 = prompts
    assert turn_1[0] == {"role": "system", "content": config.system_prompt}  # no memories in the system prompt
    memories = turn_1[-2]["content"]
    assert turn_1[-2]["role"] == "system" and memories.startswith(MEMORY_HEADER)
    assert all(memory_line(hit) in memories for hit in hits)
    assert turn_1[-1] == {"role": "user", "content": "My bike chain skips, what should I check?"}
    # The next turns repeat the earlier ones as the model saw them, memories included: a prefix the engine reuses.
    assert turn_2[:len(turn_1)] == turn_1 and turn_3[:len(turn_2)] == turn_2
    assert torch_model.last_stats.reused_tokens >= len(torch_model.prompt_ids(turn_2)[0]) - 1
    # A memory already in the conversation is listed as a source but not put in the prompt again.
    repeated = [hit for hit in again if memory_line(hit) in memories]
    assert repeated and all(memory_line(hit) not in str(turn_2[len(turn_1) + 1:]) for hit in repeated)


def test_a_template_with_one_system_message_gets_the_memories_in_the_user_message(tiny_chat_model_dir):
    model = ChatModel.load(tiny_chat_model_dir, None, device="cpu")
    # As Mistral's and Gemma's templates do: a system message anywhere but first is an error.
    model.tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' and not loop.first %}"
        "{{ raise_exception('only one system message') }}{% endif %}[{{ m['role'] }}] {{ m['content'] }}\n"
        "{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"}, {"role": "system", "content": "Memories: bees swarm."},
                {"role": "user", "content": "When?"}]
    text = model.tokenizer.decode(model.prompt_ids(messages)[0])
    assert text == ("[system] Be brief.\n[user] hi\n[assistant] hello\n[user] Memories: bees swarm.\n\nWhen?\n"
                    "[assistant]")

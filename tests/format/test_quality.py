"""Quality scores: good answers pass the default threshold, each kind of junk does not."""

from pathlib import Path

import pytest

from rhizome.format.pairs import pairs_from_conversation
from rhizome.format.quality import DEFAULT_THRESHOLD, WEIGHTS, combine, score_pair
from rhizome.format.records import Pair
from rhizome.ingest import load_conversations

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def pair(prompt, reply):
    return Pair(id="t:c:0", messages=[{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}],
                source="custom", conversation_id="c")


GOOD = {
    "fact": ("What is the capital of France?", ("The capital of France is Paris. It has been the country's capital "
             "for most of its history and is also its largest city.")),
    "code": ("How do I reverse a list in Python?", ("Use slicing or the built-in method:\n\n```python\nitems = [1, 2, 3]"
             "\nreversed_copy = items[::-1]\nitems.reverse()  # in place\n```\n\nSlicing returns a new list; "
             "`reverse()` changes the list itself and returns `None`.")),
    "short thanks": ("thanks!", "You're welcome! Good luck with the hives this spring."),
    "list": ("Give me a short shopping list for pancakes", ("- 200 g flour\n- 2 eggs\n- 300 ml milk\n- a pinch of salt"
             "\n- butter for the pan")),
    "sign-off": ("Can you explain recursion?", ("Recursion is when a function calls itself to solve a smaller "
                 "version of the same problem. Every recursive function needs a base case that stops the calls, and "
                 "a step that moves towards it. For example, factorial(n) returns 1 when n is 0 and otherwise "
                 "n * factorial(n - 1). I hope this helps!")),
    "repetitive html": ("Make a list of 30 links", "Here is the list:\n\n```html\n<ul>\n" + "".join(
        f'  <li class="item"><a href="/page/{i}">Page number {i}</a></li>\n' for i in range(30))
        + "</ul>\n```\n\nEach item links to its page."),
    "json": ("Sample JSON please", "```json\n{\"users\": [" + ", ".join(
        f'{{"id": {i}, "name": "user{i}", "active": true}}' for i in range(20)) + "]}\n```"),
    "table": ("Table of people", "| Name | Age | City |\n|------|-----|------|\n" + "".join(
        f"| Person {i} | {20 + i} | Berlin |\n" for i in range(15))),
    "math": ("Integrate x e^x", ("Integrate by parts: ∫ x·eˣ dx = x·eˣ − ∫ eˣ dx = eˣ(x − 1) + C. Check: "
             "d/dx[eˣ(x−1)] = eˣ(x−1) + eˣ = x·eˣ ✓")),
    "regex": ("Email regex?", ("Use this pattern:\n\n```\n^(?:[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\\.[a-z0-9!#$%&'*+/=?^_`{|}"
              "~-]+)*)@(?:[a-z0-9-]+\\.)+[a-z]{2,}$\n```")),
    "german": ("Varroa?", ("Die Varroamilbe ist ein Parasit der Honigbiene. Man behandelt im Spätsommer mit "
               "Ameisensäure und im Winter, wenn das Volk brutfrei ist, mit Oxalsäure.")),
    "chinese": ("春季检查?", ("蜜蜂的春季检查应该在气温超过十五度的晴天进行。检查蜂王是否产卵、蜂蜜储备是否充足、蜂群是否强壮。"
                "每次开箱时间不要超过十分钟。")),
    "error log prompt": ("Why does this fail?\n" + "Traceback (most recent call last):\n  File \"x.py\", line 3\n"
                         "ModuleNotFoundError: No module named 'foo'\n" * 3,
                         ("The module `foo` is not installed in the environment you run the script with. Install it "
                         "with `pip install foo` there, or check that the virtual environment is activated.")),
}

JUNK = {
    "refusal": ("Write me a poem about war", "I'm sorry, but I can't help with that."),
    "refusal 2": ("Can you hack my neighbour's wifi?", "I cannot help with that request."),
    "ai boilerplate": ("What do you think of the new law?", ("As an AI language model, I don't have personal opinions. "
                       "However, many people have views on both sides of the issue, and it is important to consider "
                       "multiple perspectives when forming your own view.")),
    "truncated mid-sentence": ("Explain photosynthesis", ("Photosynthesis is the process by which plants convert light "
                               "energy into chemical energy. It takes place in the chloroplasts, where chlorophyll "
                               "absorbs light and uses it to split water into oxygen and hydrogen. The overall process "
                               "can be divided into the light-dependent reactions and the")),
    "truncated with comma": ("List fruits", ("Here are some fruits that grow well in a cool climate: apples, pears, "
                             "plums, cherries,")),
    "unclosed code fence": ("Write a sort function", ("Here you go:\n\n```python\ndef sort_items(items):\n"
                            "    return sorted(items")),
    "mojibake": ("Hi", "Ã©tÃ© Ã  la plage avec mes amis, c'Ã©tait trÃ¨s bien Ã§a, vraiment trÃ¨s bien."),
    "base64 blob": ("Show me the file", ("aGVsbG8gd29ybGQgdGhpcyBpcyBhIGxvbmcgYmFzZTY0IGJsb2IgdGhhdCBnb2VzIG9uIGFuZCBv"
                    "biBhbmQgb24gYW5kIG9uIGFuZCBvbiBhbmQgb24gYW5kIG9uIGFuZCBvbg==aGVsbG8gd29ybGQgdGhpcyBpcyBhIGxvbmc=")),
    "symbols": ("Describe the weather", ("#$%^&*()_+{}|:<>?~`!@#$%^&*()_+-=[]\\;',./ @@@ ### $$$ %%% ^^^ &&& *** ((( "
                ")))")),
    "loop": ("Tell me a story", "Once upon a time there was a cat. " + "The cat sat on the mat and looked. " * 30),
    "line loop": ("Continue", "\n".join(["I will now repeat the previous line again."] * 12)),
    "one word": ("What is 2+2?", "4"),
    "ignored long paste": ("Summarise this:\n" + "The committee met to discuss the budget for next year. " * 100, "ok"),
}


@pytest.mark.parametrize("name", GOOD)
def test_good_answers_pass(name):
    score, components = score_pair(pair(*GOOD[name]))
    assert score >= 0.75, (score, components)


@pytest.mark.parametrize("name", JUNK)
def test_junk_fails(name):
    score, components = score_pair(pair(*JUNK[name]))
    assert score < DEFAULT_THRESHOLD, (score, components)


def test_each_junk_kind_is_caught_by_its_component():
    def component(name, key):
        return score_pair(pair(*JUNK[name]))[1][key]

    assert component("refusal", "refusal") == 0.0
    assert component("ai boilerplate", "refusal") == 0.2
    assert component("truncated mid-sentence", "truncation") < 0.5
    assert component("unclosed code fence", "truncation") < 0.5
    assert component("mojibake", "garbage") < 0.5
    assert component("base64 blob", "garbage") < 0.5
    assert component("symbols", "garbage") < 0.5
    assert component("loop", "diversity") < 0.5
    assert component("line loop", "diversity") < 0.5
    assert component("one word", "length") < 0.5
    assert component("ignored long paste", "balance") < 0.5


def test_sample_conversations_score_well():
    conversations = load_conversations([SAMPLES / "conversations.json", SAMPLES / "conversations2.json"])
    scores = [score_pair(p)[0] for c in conversations for p in pairs_from_conversation(c)]
    assert len(scores) > 20 and min(scores) >= 0.7


def test_components_and_score_stay_in_range():
    texts = ["", " ", "a", "```", "Ã©" * 50, "x" * 100_000, "word " * 5000, "😊", "\n\n\n"]
    for prompt in texts:
        for reply in texts:
            score, components = score_pair(pair(prompt or "?", reply or "!"))
            assert 0.0 <= score <= 1.0 and set(components) == set(WEIGHTS)
            assert all(0.0 <= value <= 1.0 for value in components.values())


def test_combine_is_the_documented_formula():
    assert combine(dict.fromkeys(WEIGHTS, 1.0)) == 1.0
    assert combine({**dict.fromkeys(WEIGHTS, 1.0), "truncation": 0.6}) == round(1 - 0.15 * 0.4, 4)
    assert combine({**dict.fromkeys(WEIGHTS, 1.0), "truncation": 0.2}) == round((1 - 0.15 * 0.8) * 0.4, 4)
    assert abs(sum(WEIGHTS.values()) - 1.0) < 1e-9

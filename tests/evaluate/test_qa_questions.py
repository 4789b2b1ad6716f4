"""QA questions: made the same way every time, gold spans taken from the source, none answered by the training split."""

import random

from rhizome.evaluate.qa_metrics import normalize_answer
from rhizome.evaluate.qa_questions import BLANK, build_questions, key_spans, training_text

HELD_PDF = "held_out.pdf"
CHUNKS = [
    {"id": f"{HELD_PDF}#0", "source_file": HELD_PDF, "chunk_index": 0, "title": "Winter Bees", "page_start": 1,
     "page_end": 1,
     "text": ("Winter bees\n\nIn winter the colony keeps the brood nest at about 35 °C, even when it freezes outside. "
              "A friend in Bavaria weighs her hives every week with a hanging scale. "
              "Short.")},
    {"id": f"{HELD_PDF}#1", "source_file": HELD_PDF, "chunk_index": 1, "title": "Winter Bees", "page_start": 2,
     "page_end": 2,
     "text": "Check the stores again after 14 days of frost, lifting the back of the hive by hand."},
    {"id": "trained.pdf#0", "source_file": "trained.pdf", "chunk_index": 0, "title": "Bicycles",
     "page_start": 1, "page_end": 1,
     "text": "A steel frame from 1985 with Reynolds tubing usually weighs about 2.4 kg without its fork."},
]


def pair(pair_id, user, reply):
    return {"id": pair_id, "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}],
            "themes": [], "theme_weight": 1.0}


TEST = [
    pair(f"pdf:{HELD_PDF}:0", "What does page 1 cover?", CHUNKS[0]["text"]),
    pair(f"pdf:{HELD_PDF}:1", "What does page 2 cover?", CHUNKS[1]["text"]),
    pair("custom:bags:0", "When do I cut the bag open?",
         "Cut a small X, about 3 cm across, right where the pins appear, and mist twice a day."),
]
TRAIN = [
    pair("pdf:trained.pdf:0", "What does the bicycle page cover?", CHUNKS[2]["text"]),
    # States the 35 °C fact: a question asking for it would test memorised training data.
    pair("custom:scale:0", "How warm is the brood nest?", "The bees heat the brood nest to 35 °C from February."),
]


def build(**kwargs):
    return build_questions(CHUNKS, {"test": TEST}, TRAIN, **kwargs)


def test_questions_are_the_same_on_every_run_and_for_any_input_order():
    first, counts = build()
    again, _ = build()
    shuffled_chunks, shuffled_test = CHUNKS[:], TEST[:]
    random.Random(3).shuffle(shuffled_chunks)
    random.Random(3).shuffle(shuffled_test)
    reordered, _ = build_questions(shuffled_chunks, {"test": shuffled_test}, TRAIN)
    assert [q.as_dict() for q in first] == [q.as_dict() for q in again] == [q.as_dict() for q in reordered]
    assert counts == {"pdf": {"made": 2, "asked": 2}, "conversation": {"made": 1, "asked": 1}}


def test_gold_spans_are_verbatim_in_their_source_and_blanked_in_the_question():
    questions, _ = build()
    sources = {f"pdf:{c['source_file']}:{c['chunk_index']}": c["text"] for c in CHUNKS}
    sources["custom:bags:0"] = TEST[2]["messages"][-1]["content"]
    assert {q.answer for q in questions} == {"Bavaria", "14 days", "3 cm"}
    for q in questions:
        assert q.answer in sources[q.source_id]
        assert q.answer in q.sentence and " ".join(q.sentence.split()) in " ".join(sources[q.source_id].split())
        assert BLANK in q.question and normalize_answer(q.answer) not in normalize_answer(q.question)
        assert q.question.replace(BLANK, q.answer).count(q.answer) == 1


def test_no_question_is_answered_by_the_training_split():
    questions, _ = build()
    train = training_text(TRAIN)
    for q in questions:
        assert f" {normalize_answer(q.answer)} " not in f" {train} "
    # 35 °C is the first span of its sentence but is stated in training: that sentence asks nothing, and the
    # chunk's next fact (Bavaria) is asked instead.
    assert "35 °C" not in {q.answer for q in questions}
    without_train, _ = build_questions(CHUNKS, {"test": TEST}, [])
    assert "35 °C" in {q.answer for q in without_train}


def test_only_held_out_chunks_are_asked_about():
    questions, _ = build()
    assert {q.source.get("file") for q in questions if q.kind == "pdf"} == {HELD_PDF}
    assert all(q.source["split"] == "test" for q in questions)


def test_key_spans_prefer_numbers_then_names_then_the_key_term():
    sentence = "Oyster mushrooms from Poland fruit after 10 days at 18 °C, like oyster mushrooms elsewhere."
    assert key_spans(sentence, "oyster mushrooms") == [
        ("10 days", "number"), ("18 °C", "number"), ("Poland", "name"), ("Oyster mushrooms", "term")]


def test_the_sample_is_capped_alternating_pdf_and_conversation_questions():
    questions, counts = build(max_questions=2)
    assert [q.kind for q in questions] == ["pdf", "conversation"]
    assert counts["pdf"] == {"made": 2, "asked": 1}


def test_sentences_keep_inner_periods_and_skip_fragments():
    from rhizome.evaluate.qa_questions import sentences

    text = ("Changed in version 3.10: grouping parentheses may break the statement over lines. "
            ") Guard evaluation must stop once a case block is selected, which is a fragment here.")
    assert sentences(text) == ["Changed in version 3.10: grouping parentheses may break the statement over lines."]


def test_key_terms_are_whole_words():
    assert key_spans("In contrast, non-data descriptors can be overridden by instances.", "descriptor") == []


def test_a_sentence_repeated_by_overlapping_chunks_is_asked_once():
    overlap = {**CHUNKS[1], "id": f"{HELD_PDF}#2", "chunk_index": 2}
    test = TEST + [pair(f"pdf:{HELD_PDF}:2", "What does page 3 cover?", overlap["text"])]
    questions, counts = build_questions(CHUNKS + [overlap], {"test": test}, TRAIN)
    assert [q.answer for q in questions].count("14 days") == 1 and counts["pdf"]["made"] == 2

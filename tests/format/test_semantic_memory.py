import pickle

import pytest

from rhizome import safe_pickle
from rhizome.format.records import Pair
from rhizome.format.semantic_memory import SemanticMemory, SemanticMemoryError
from rhizome.format.themes import assign_theme_weights, source_counts, theme_counts
from tests.test_safe_pickle import PointerArray, run_python


def themed_pairs(spec, prefix):
    """Pairs with given themes: ``spec`` is [(themes, how many pairs)]."""
    pairs = []
    for themes, count in spec:
        for _ in range(count):
            pairs.append(Pair(id=f"{prefix}{len(pairs)}", messages=[{"role": "user", "content": "q"},
                              {"role": "assistant", "content": "a"}], source="chatgpt", conversation_id="c",
                              themes=list(themes)))
    return pairs


def weight_of(pairs, theme):
    return next(p.theme_weight for p in pairs if p.themes == [theme])


def run(pairs, memory, path):
    counts = theme_counts(pairs)
    assign_theme_weights(pairs, "tfidf", frequencies=memory.effective_counts(counts))
    memory.record_run(counts, source_counts(pairs), len(pairs))
    memory.save(path)


def test_adaptive_second_run_favours_theme_that_stayed_rare(tmp_path):
    path = tmp_path / "semantic_memory.pkl"
    first = themed_pairs([(["python"], 40), (["joyce"], 2), (["cooking"], 10)], "a")
    run(first, SemanticMemory.load(path), path)

    # New data in which python and joyce are equally common.
    second = themed_pairs([(["python"], 5), (["joyce"], 5), (["cooking"], 10)], "b")
    normal = themed_pairs([(["python"], 5), (["joyce"], 5), (["cooking"], 10)], "n")
    assign_theme_weights(normal, "tfidf")
    assert weight_of(normal, "joyce") == pytest.approx(weight_of(normal, "python"))

    memory = SemanticMemory.load(path)
    assert memory.runs == 1 and memory.theme_counts["python"] == 40
    run(second, memory, path)
    assert weight_of(second, "joyce") > 1.5 * weight_of(second, "python")

    stored = SemanticMemory.load(path)
    assert stored.runs == 2 and stored.pairs_seen == 72
    assert stored.theme_counts["python"] == pytest.approx(5 + 0.5 * 40)
    assert stored.source_counts == {"chatgpt": pytest.approx(20 + 0.5 * 52)}
    assert len(stored.run_timestamps) == 2


def test_semantic_memory_file_holds_only_plain_data(tmp_path):
    path = tmp_path / "semantic_memory.pkl"
    memory = SemanticMemory()
    memory.record_run({"a": 3}, {"pdf": 3}, 3, when="2024-01-01T00:00:00+00:00")
    memory.save(path)
    data = safe_pickle.load(path)  # the restricted loader accepts it
    assert data["theme_counts"] == {"a": 3.0} and data["runs"] == 1 and data["created"].startswith("2024")


def test_missing_semantic_memory_starts_fresh(tmp_path):
    memory = SemanticMemory.load(tmp_path / "absent.pkl")
    assert memory.runs == 0 and memory.theme_counts == {}
    assert memory.effective_counts({"x": 2}) == {"x": 2.0}


class Boom:
    def __reduce__(self):
        return (print, ("pwned",))


def test_crafted_semantic_memory_pickle_is_refused_by_loader(tmp_path):
    path = tmp_path / "semantic_memory.pkl"
    path.write_bytes(pickle.dumps({"schema": "rhizome.semantic_memory", "payload": Boom()}))
    with pytest.raises(safe_pickle.UnsafePickleError, match="builtins.print"):
        SemanticMemory.load(path)


def test_damaged_semantic_memory_names_file_and_says_delete_it(tmp_path):
    path = tmp_path / "semantic_memory.pkl"
    memory = SemanticMemory()
    memory.record_run({"a": 1}, {"pdf": 1}, 1)
    memory.save(path)
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(safe_pickle.UnsafePickleError, match="semantic_memory.pkl: damaged.*Delete it to start"):
        SemanticMemory.load(path)


def test_semantic_memory_with_a_numpy_pointer_array_is_refused_not_read(tmp_path):
    path = tmp_path / "semantic_memory.pkl"
    memory = SemanticMemory()
    memory.record_run({"a": 1}, {"pdf": 1}, 1)
    path.write_bytes(pickle.dumps({**memory.to_dict(), "created": PointerArray()}, protocol=5))
    done = run_python(
        "from rhizome import safe_pickle\nfrom rhizome.format.semantic_memory import SemanticMemory\n"
        f"try:\n    print(SemanticMemory.load({str(path)!r}).created)\n"
        "except safe_pickle.UnsafePickleError as exc:\n    print('refused:', exc)\n"
    )
    assert done.returncode == 0, f"child ended with {done.returncode}: {done.stderr[-500:]}"
    assert "refused:" in done.stdout and "Delete it to start the history fresh" in done.stdout


def test_semantic_memory_with_an_impossible_count_is_a_named_error(tmp_path):
    path = tmp_path / "semantic_memory.pkl"
    memory = SemanticMemory()
    memory.record_run({"a": 1}, {"pdf": 1}, 1)
    data = memory.to_dict()
    data["theme_counts"] = {"a": 10**400}  # no float holds it
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(SemanticMemoryError, match="semantic_memory.pkl: is damaged"):
        SemanticMemory.load(path)


def test_foreign_pickle_is_not_taken_for_semantic_memory(tmp_path):
    path = tmp_path / "semantic_memory.pkl"
    path.write_bytes(pickle.dumps({"themes": ["a"]}))
    with pytest.raises(SemanticMemoryError, match="not a RhizomeML semantic memory file"):
        SemanticMemory.load(path)


def test_history_forgets_themes_that_decayed_away():
    memory = SemanticMemory(decay=0.1)
    memory.record_run({"once": 1, "always": 1}, {}, 2)
    for _ in range(3):  # "once" decays 1 -> 0.1 -> 0.01 -> 0.001, under FORGET_BELOW
        memory.record_run({"always": 1}, {}, 1)
    assert "once" not in memory.theme_counts and memory.theme_counts["always"] == pytest.approx(1.111)

"""Rare themes come from the training split's counts; rare and common partition the tagged test pairs."""

from rhizome.evaluate.themes import pair_groups, rare_themes, theme_members, training_theme_counts


def test_threshold_and_rule_decide_the_groups(theme_lists):
    train_themes, test_themes = theme_lists
    counts = training_theme_counts(train_themes)
    assert counts == {"bees": 3, "honey": 3, "spoke": 2, "wheel": 1}
    assert rare_themes(test_themes, counts, 2) == ["reishi", "spoke", "wheel"]  # reishi: never in training
    assert rare_themes(test_themes, counts, 1) == ["reishi", "wheel"]
    assert rare_themes(test_themes, counts, 0) == ["reishi"]
    assert pair_groups(test_themes, rare_themes(test_themes, counts, 2), "all") == {"rare": [1, 3], "common": [0, 2]}
    assert pair_groups(test_themes, rare_themes(test_themes, counts, 2), "any") == {"rare": [1, 2, 3], "common": [0]}
    assert pair_groups(test_themes, rare_themes(test_themes, counts, 1), "all") == {"rare": [1], "common": [0, 2, 3]}


def test_a_theme_repeated_in_a_pair_counts_once():
    assert training_theme_counts([["a", "a", "b"], ["a"]]) == {"a": 2, "b": 1}
    assert theme_members([["a", "a"], ["b", "a"]]) == {"a": [0, 1], "b": [1]}


def test_report_groups_add_up_to_the_tagged_pairs(evaluation):
    report, _ = evaluation
    assert report["rare_themes"] == ["reishi", "spoke", "wheel"] and report["rare_max_pairs"] == 2
    assert report["groups"] == {"rare": [1, 3], "common": [0, 2]}
    for model in report["models"].values():
        rare, common, overall = model["rare"], model["common"], model["overall"]
        assert rare["pairs"] + common["pairs"] == overall["pairs"] - 1  # the untagged pair is only in overall
        assert rare["tokens"] + common["tokens"] < overall["tokens"]

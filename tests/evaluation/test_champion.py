"""The champion rules: the best validation run is chosen, and the registry alias moves only forward."""

from __future__ import annotations

from clinfuse.evaluation.champion import beats_champion, best_run_per_method, champion_of


def run(method, seed, value):
    return {"method": method, "seed": seed, "validation": {"value": value}}


def test_champion_is_the_run_with_the_highest_validation_score():
    runs = [run("late_fusion", 1, 0.61), run("masam", 1, 0.74), run("sam", 1, 0.52)]
    assert champion_of(runs)["method"] == "masam"


def test_a_run_without_validation_score_is_never_champion_over_a_scored_one():
    runs = [run("late_fusion", 1, None), run("masam", 1, 0.05)]
    assert champion_of(runs)["method"] == "masam"
    assert champion_of(list(reversed(runs)))["method"] == "masam"


def test_tied_validation_scores_go_to_the_first_method_then_the_lowest_seed():
    runs = [run("late_fusion", 3, 0.7), run("late_fusion", 2, 0.7), run("masam", 1, 0.7), run("sam", 1, 0.6)]
    champion = champion_of(runs)
    assert (champion["method"], champion["seed"]) == ("late_fusion", 2)


def test_alias_moves_to_the_first_version_and_to_strictly_better_ones_only():
    assert beats_champion(0.4, None)
    assert beats_champion(0.71, 0.70)
    assert not beats_champion(0.70, 0.70)
    assert not beats_champion(0.69, 0.70)


def test_each_method_shows_its_own_best_validation_seed_in_the_order_asked():
    runs = [run("masam", 1, 0.70), run("late_fusion", 1, 0.60), run("masam", 2, 0.72), run("late_fusion", 2, 0.58)]
    best = best_run_per_method(runs, ["late_fusion", "masam"])
    assert list(best) == ["late_fusion", "masam"]
    assert (best["late_fusion"]["seed"], best["masam"]["seed"]) == (1, 2)


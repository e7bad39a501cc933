"""Linear probes on frozen features and the paper-style summary tables (Tables 1, 6, 7)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clinfuse.evaluation.metrics import task_metrics
from clinfuse.evaluation.paper_tables import cross_cohort_table, per_label_table
from clinfuse.evaluation.probes import probe_probabilities


def test_a_probe_on_linearly_separable_features_scores_almost_perfectly():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    y = np.stack([(x[:, 0] > 0), (x[:, 1] - x[:, 2] > 0)], axis=1).astype(np.float32)
    probs, constant = probe_probabilities(x[:200], y[:200], x[200:], "multilabel", 2, c=100.0, max_iter=1000)
    m = task_metrics("multilabel", y[200:], probs, ["a", "b"])
    assert constant == []
    assert m["macro_auprc"] > 0.99


def test_a_multiclass_probe_on_separated_clusters_classifies_almost_every_test_sample():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, size=240)
    x = np.eye(3)[y] * 6 + rng.normal(size=(240, 3))
    probs, _ = probe_probabilities(x[:160], y[:160], x[160:], "multiclass", 3)
    assert (probs.argmax(1) == y[160:]).mean() > 0.97


def test_a_label_with_one_class_in_training_is_scored_by_its_prevalence_and_named():
    x = np.arange(20, dtype=float)[:, None]
    y = np.stack([x[:, 0] > 9, np.zeros(20)], axis=1)
    probs, constant = probe_probabilities(x, y, x, "multilabel", 2)
    assert constant == [1]
    assert np.all(probs[:, 1] == 0.0)


def hand_table() -> pd.DataFrame:
    rows = []
    # cohort A: late_fusion 0.40/0.42 (mean .41), sam .45/.45, masam .50/.48 (mean .49)
    for m, vals in {"late_fusion": [0.40, 0.42], "sam": [0.45, 0.45], "masam": [0.50, 0.48]}.items():
        rows += [{"cohort": "A", "method": m, "seed": s, "v": v} for s, v in zip((1, 2), vals, strict=True)]
    # cohort B: the strongest baseline wins (masam below it)
    for m, v in {"late_fusion": 0.80, "sam": 0.60, "masam": 0.70}.items():
        rows.append({"cohort": "B", "method": m, "seed": 1, "v": v})
    return pd.DataFrame(rows)


def test_table1_ranks_gains_best_and_strongest_baseline_on_a_hand_made_table():
    t = cross_cohort_table(hand_table(), "v", proposed=["masam"]).set_index(["cohort", "method"])
    assert t.loc[("A", "masam"), "mean"] == pytest.approx(0.49)
    assert t.loc[("A", "late_fusion"), "std"] == pytest.approx(np.std([0.40, 0.42], ddof=1))
    assert list(t.loc["A", "rank"]) == [3.0, 2.0, 1.0]
    # gain over the strongest baseline (sam, 0.45): 100 * (0.49 - 0.45) / 0.45
    assert t.loc[("A", "masam"), "gain_pct"] == pytest.approx(100 * 0.04 / 0.45)
    assert t.loc[("A", "sam"), "gain_pct"] == pytest.approx(0.0)
    assert t.loc[("A", "masam"), "best"] and t.loc[("A", "sam"), "strongest_baseline"]
    assert t.loc[("B", "late_fusion"), "best"] and t.loc[("B", "late_fusion"), "strongest_baseline"]
    assert t.loc[("B", "masam"), "gain_pct"] == pytest.approx(100 * (0.70 - 0.80) / 0.80)
    assert t.loc[("B", "masam"), "rank"] == 2.0


def test_table6_average_rank_over_labels_shares_ties():
    per_label = pd.DataFrame([
        {"method": "a", "seed": 1, "label": "x", "auprc": 0.9}, {"method": "b", "seed": 1, "label": "x", "auprc": 0.5},
        {"method": "a", "seed": 1, "label": "y", "auprc": 0.4}, {"method": "b", "seed": 1, "label": "y", "auprc": 0.4},
    ])
    wide, ranks = per_label_table(per_label)
    assert wide.loc["x", "a"] == 0.9
    assert ranks["a"] == pytest.approx((1 + 1.5) / 2) and ranks["b"] == pytest.approx((2 + 1.5) / 2)

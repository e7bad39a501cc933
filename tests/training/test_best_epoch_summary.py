"""The selected epoch's metrics are the run's `best_*` summary in MLflow; a run still improving is flagged."""

from __future__ import annotations

import pytest

from clinfuse.evaluation.epoch_selection import best_epoch_metrics, still_improving
from clinfuse.pipeline.trainer import fit
from tests.training.test_trainer import spec

HISTORY = [{"epoch": 1, "train_loss_total": 0.9, "val_macro_auprc": 0.50, "lr": 1e-3},
           {"epoch": 2, "train_loss_total": 0.7, "val_macro_auprc": 0.62, "val_macro_auroc": 0.70, "lr": 1e-3},
           {"epoch": 3, "train_loss_total": 0.6, "val_macro_auprc": 0.58, "val_macro_auroc": None, "lr": 1e-3}]


def test_best_metrics_are_the_selected_epochs_not_the_last_ones():
    assert best_epoch_metrics(HISTORY, 2) == {"best_train_loss_total": 0.7, "best_val_macro_auprc": 0.62,
                                              "best_val_macro_auroc": 0.70, "best_epoch": 2.0, "last_epoch": 3.0,
                                              "still_improving": 0.0}


def test_a_run_whose_best_epoch_is_its_last_is_still_improving():
    assert best_epoch_metrics(HISTORY[:2], 2)["still_improving"] == 1.0
    assert still_improving(12, 12, 0.6) and not still_improving(9, 12, 0.6) and not still_improving(None, 3, 0.6)
    assert not still_improving(0, 0, 0.6)  # no epoch run


def test_without_a_validation_score_the_kept_last_epoch_is_not_still_improving():
    # no validation rows: the trainer keeps the last epoch by rule, not because it scored best
    assert not still_improving(12, 12, None)
    no_score = [{"epoch": 1, "train_loss_total": 0.9, "val_macro_auprc": None, "lr": 1e-3},
                {"epoch": 2, "train_loss_total": 0.7, "val_macro_auprc": None, "lr": 1e-3}]
    assert best_epoch_metrics(no_score, 2) == {"best_train_loss_total": 0.7, "best_epoch": 2.0, "last_epoch": 2.0,
                                               "still_improving": 0.0}


def test_a_best_epoch_missing_from_the_history_is_an_error_and_no_epoch_no_summary():
    with pytest.raises(ValueError, match="best epoch 5"):
        best_epoch_metrics(HISTORY, 5)
    assert best_epoch_metrics([], None) == {}


def test_the_mlflow_run_shows_best_metrics_next_to_the_last_epochs(mimic_cohort, tmp_path, tracking_uri, monkeypatch):
    import json

    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    summary = fit(spec(mimic_cohort, "late_fusion", tmp_path / "run", epochs=3), track=True)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    mlflow.set_tracking_uri(tracking_uri)
    metrics = mlflow.MlflowClient().get_run(summary["mlflow_run_id"]).data.metrics
    best = next(r for r in history if r["epoch"] == summary["best_epoch"])
    assert metrics["best_epoch"] == summary["best_epoch"] and metrics["last_epoch"] == 3
    assert metrics["best_val_macro_auprc"] == pytest.approx(best["val_macro_auprc"])
    assert metrics["val_macro_auprc"] == pytest.approx(history[-1]["val_macro_auprc"])  # the last epoch's
    assert metrics["still_improving"] == float(summary["best_epoch"] == 3) and \
        summary["still_improving"] == (summary["best_epoch"] == 3)

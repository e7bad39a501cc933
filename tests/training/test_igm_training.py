"""IGM through the trainer on tiny cohorts: every task type, resume after a kill, MLflow metrics."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from clinfuse.pipeline.data import load_cohort
from clinfuse.pipeline.inference import load_trained_model, predict_split
from clinfuse.pipeline.trainer import StopTraining, fit
from tests.fixtures.cohorts import write_cohort
from tests.training.test_trainer import spec


@pytest.fixture(scope="module")
def mortality_cohort(tmp_path_factory):
    """The tiny MIMIC cohort relabelled as a binary task (one label column)."""
    path = write_cohort(tmp_path_factory.mktemp("cohorts") / "mimic-mortality", "mimic")
    samples = pd.read_parquet(path / "samples.parquet")
    samples["in_hospital_mortality"] = samples["Shock"]
    samples.drop(columns=["Sepsis", "Shock", "CHF"]).to_parquet(path / "samples.parquet", index=False)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(task="mortality", task_type="binary", label_columns=["in_hospital_mortality"])
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


@pytest.mark.parametrize("cohort", ["mimic_cohort", "mortality_cohort", "adni_cohort"])
def test_igm_trains_on_every_task_type_and_predicts_with_the_mean_of_probabilities(cohort, request, tmp_path):
    path = request.getfixturevalue(cohort)
    summary = fit(spec(path, "igm", tmp_path / "run"), track=False)
    assert summary["epochs_run"] == 2 and summary["best_val_metric"] is not None
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    mods = load_cohort(path).modalities
    for record in history:  # each epoch is one outer iteration: both modalities trained, both T updated
        assert {f"train_loss_{m}" for m in mods} <= set(record)
        assert {f"epoch/igm_{m}_effective_rank" for m in mods} <= set(record)
    assert [r["epoch/igm_outer_iterations"] for r in history] == [1.0, 2.0]
    model, config = load_trained_model(tmp_path / "run")
    assert type(model).__name__ == "IGMModel" and config["prediction_head"] == "fused"
    rows, probs = predict_split(tmp_path / "run", load_cohort(path), "test")
    assert probs.shape[0] == len(rows)
    if cohort == "adni_cohort":
        assert torch.allclose(torch.from_numpy(probs.sum(1)), torch.ones(len(rows)), atol=1e-5)


@pytest.mark.parametrize("inner_iters", [None, 3])
def test_killed_and_resumed_igm_run_ends_like_an_uninterrupted_one(mimic_cohort, tmp_path, inner_iters):
    def igm_spec(out):
        s = spec(mimic_cohort, "igm", out, epochs=3)
        s.method.options["inner_iters"] = inner_iters
        return s

    full = fit(igm_spec(tmp_path / "full"), track=False)
    with pytest.raises(StopTraining):
        fit(igm_spec(tmp_path / "killed"), track=False, stop_after_epoch=1)
    resumed = fit(igm_spec(tmp_path / "killed"), resume=True, track=False)
    assert resumed["best_val_metric"] == full["best_val_metric"]
    assert json.loads((tmp_path / "killed" / "history.json").read_text()) == json.loads(
        (tmp_path / "full" / "history.json").read_text()
    )
    a, _ = load_trained_model(tmp_path / "full")
    b, _ = load_trained_model(tmp_path / "killed")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def test_igm_mlflow_run_logs_per_modality_losses_and_t_spectra(mimic_cohort, tmp_path, tracking_uri, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    s = spec(mimic_cohort, "igm", tmp_path / "tracked")
    s.settings.log_every = 1
    summary = fit(s, track=True)
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient()
    metrics = client.get_run(summary["mlflow_run_id"]).data.metrics
    assert {"step/loss_ehr", "step/loss_cxr", "train_loss_ehr", "train_loss_cxr"} <= set(metrics)
    for m in ("ehr", "cxr"):
        for key in ("lambda_max", "lambda_min", "effective_rank", "mean_sigma"):
            history = client.get_metric_history(summary["mlflow_run_id"], f"epoch/igm_{m}_{key}")
            assert [h.step for h in history] == [1, 2]

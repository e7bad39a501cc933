"""OGM-GE, AGM and G-Blend train on every task type, log their quantities and resume exactly."""

from __future__ import annotations

import json

import pytest
import torch

from clinfuse.pipeline.data import load_cohort
from clinfuse.pipeline.inference import load_trained_model, predict_split
from clinfuse.pipeline.settings.methods import MethodConfig
from clinfuse.pipeline.settings.train import TrainSettings
from clinfuse.pipeline.trainer import RunSpec, StopTraining, fit
from tests.fixtures.cohorts import write_cohort
from tests.training.test_trainer import TINY

METHODS = ["ogm_ge", "agm", "gblend"]


@pytest.fixture(scope="module")
def binary_cohort(tmp_path_factory):
    """The MIMIC fixture with one label: a binary (mortality-like) task."""
    path = write_cohort(tmp_path_factory.mktemp("cohorts") / "mimic-mortality", "mimic")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update({"task": "mortality", "task_type": "binary", "label_columns": ["Sepsis"]})
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def spec(cohort, method, out, epochs=2, options=None):
    cfg = MethodConfig(method=method, options=options or {}).check(method)
    settings = TrainSettings(epochs=epochs, batch_size=8, num_threads=1, patience=10, device="cpu")
    return RunSpec(cohort, method, cfg, "tiny", TINY, settings, 3, out)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["mimic", "binary", "adni"])
def test_each_baseline_trains_and_predicts_on_every_task_type(
    method, kind, mimic_cohort, binary_cohort, adni_cohort, tmp_path
):
    cohort = {"mimic": mimic_cohort, "binary": binary_cohort, "adni": adni_cohort}[kind]
    summary = fit(spec(cohort, method, tmp_path / "run", options={"super_epoch": 1} if method == "gblend" else {}),
                  track=False)
    assert summary["epochs_run"] == 2 and summary["best_val_metric"] is not None
    c = load_cohort(cohort)
    rows, probs = predict_split(tmp_path / "run", c, "test")
    assert probs.shape == (len(rows), c.num_outputs) and torch.isfinite(torch.from_numpy(probs)).all()
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    quantity = {"ogm_ge": "train_coeff_", "agm": "train_coeff_", "gblend": "train_weight_"}[method]
    assert any(k.startswith(quantity) for k in history[0])
    if method == "gblend":  # re-estimated every epoch (super_epoch 1): logged at each epoch start
        assert all("epoch/weight_fused" in h for h in history)


@pytest.mark.parametrize("method", METHODS)
def test_killed_and_resumed_baseline_ends_like_an_uninterrupted_run(method, mimic_cohort, tmp_path):
    options = {"super_epoch": 2} if method == "gblend" else {}  # an estimate after the kill (epoch 2)
    full = fit(spec(mimic_cohort, method, tmp_path / "full", epochs=3, options=options), track=False)
    with pytest.raises(StopTraining):
        fit(spec(mimic_cohort, method, tmp_path / "killed", epochs=3, options=options), track=False,
            stop_after_epoch=1)
    resumed = fit(spec(mimic_cohort, method, tmp_path / "killed", epochs=3, options=options), resume=True,
                  track=False)
    assert resumed["best_val_metric"] == full["best_val_metric"]
    assert json.loads((tmp_path / "killed" / "history.json").read_text()) == json.loads(
        (tmp_path / "full" / "history.json").read_text()
    )
    a, _ = load_trained_model(tmp_path / "full")
    b, _ = load_trained_model(tmp_path / "killed")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def test_gblend_weights_reach_mlflow_each_time_they_are_estimated(mimic_cohort, tmp_path, tracking_uri, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    s = spec(mimic_cohort, "gblend", tmp_path / "tracked", epochs=3, options={"super_epoch": 2})
    s.settings.log_every = 1
    summary = fit(s, track=True)
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient()
    history = client.get_metric_history(summary["mlflow_run_id"], "epoch/weight_fused")
    assert [m.step for m in history] == [1, 3]  # estimated before epochs 0 and 2
    assert "step/weight_cxr" in client.get_run(summary["mlflow_run_id"]).data.metrics

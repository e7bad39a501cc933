"""MLA, MMPareto and AUG (and MASAM's Table 8 configs) through the trainer on tiny cohorts of every task type."""

from __future__ import annotations

import pytest
import torch

from clinfuse.models.export import ExportableFusion
from clinfuse.pipeline.checkpoints import CHECKPOINT_LAST
from clinfuse.pipeline.data import load_cohort, split_tensors
from clinfuse.pipeline.inference import load_trained_model, predict_split
from clinfuse.pipeline.trainer import StopTraining, fit
from tests.training.test_trainer import spec


@pytest.mark.parametrize("method", ["mla", "mmpareto", "aug"])
@pytest.mark.parametrize("kind", ["mimic", "binary", "adni"])
def test_method_trains_and_predicts_with_its_rule_on_every_task_type(
    method, kind, mimic_cohort, binary_cohort, adni_cohort, tmp_path
):
    cohort = {"mimic": mimic_cohort, "binary": binary_cohort, "adni": adni_cohort}[kind]
    summary = fit(spec(cohort, method, tmp_path / method), track=False)
    assert summary["epochs_run"] == 2 and summary["best_val_metric"] is not None
    loaded = load_cohort(cohort)
    rows, probs = predict_split(tmp_path / method, loaded, "test")
    assert probs.shape == (len(rows), loaded.num_outputs) and ((probs >= 0) & (probs <= 1)).all()
    # the exported (registry) model computes the same prediction rule
    model, config = load_trained_model(tmp_path / method)
    test = split_tensors(loaded, "test")
    b = test.batch(torch.arange(len(test)))
    args = [b["inputs"][m] for m in model.modalities] + [b["present"][m].float() for m in model.modalities]
    exported = torch.export.export(ExportableFusion(model, loaded.task_type).eval(), tuple(args))
    assert torch.allclose(exported.module()(*args), torch.from_numpy(probs), atol=1e-5)


@pytest.mark.parametrize("method", ["masam_score_ogm", "masam_gamma_only", "masam_dir_difference",
                                    "masam_dir_orthogonal"])
def test_masam_design_alternatives_train(method, mimic_cohort, tmp_path):
    assert fit(spec(mimic_cohort, method, tmp_path / method, epochs=1), track=False)["best_val_metric"] is not None


@pytest.mark.parametrize("method", ["aug", "mla"])
def test_killed_and_resumed_run_of_a_stateful_baseline_ends_like_an_uninterrupted_one(method, mimic_cohort, tmp_path):
    full = fit(spec(mimic_cohort, method, tmp_path / "full", epochs=4), track=False)
    with pytest.raises(StopTraining):
        fit(spec(mimic_cohort, method, tmp_path / "killed", epochs=4), track=False, stop_after_epoch=2)
    resumed = fit(spec(mimic_cohort, method, tmp_path / "killed", epochs=4), resume=True, track=False)
    assert resumed["best_val_metric"] == full["best_val_metric"]
    assert (tmp_path / "killed" / "history.json").read_text() == (tmp_path / "full" / "history.json").read_text()
    last = {d: torch.load(tmp_path / d / CHECKPOINT_LAST, weights_only=False) for d in ("full", "killed")}
    for key, value in last["full"]["model"].items():
        assert torch.equal(value, last["killed"]["model"][key]), key
    if method == "aug":  # the network grew during the run, and the resumed one grew the same way
        assert last["full"]["model"]["active"].sum() > 0


def test_aug_logs_its_assignment_per_epoch_to_mlflow(mimic_cohort, tmp_path, tracking_uri, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    s = spec(mimic_cohort, "aug", tmp_path / "tracked", epochs=3)
    s.settings.log_every = 1
    summary = fit(s, track=True)
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient()
    metrics = client.get_run(summary["mlflow_run_id"]).data.metrics
    assert {"epoch/boosted", "epoch/ratio", "epoch/classifiers_cxr", "step/boost_weight_ehr"} <= set(metrics)
    assert [m.step for m in client.get_metric_history(summary["mlflow_run_id"], "epoch/boosted")] == [2, 3]

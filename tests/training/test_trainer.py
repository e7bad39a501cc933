"""Training runs end to end on tiny cohorts: methods, resume, determinism, MLflow, CLI errors."""

from __future__ import annotations

import json

import pytest
import torch

from clinfuse.pipeline.cli import main
from clinfuse.pipeline.config import load_section
from clinfuse.pipeline.data import load_cohort
from clinfuse.pipeline.inference import load_trained_model, predict_split
from clinfuse.pipeline.settings.methods import MethodConfig, ModelPreset, method_path, preset_path
from clinfuse.pipeline.settings.train import TrainSettings
from clinfuse.pipeline.trainer import RunSpec, StopTraining, fit

TINY = {
    "ehr": {"name": "ehr_transformer", "d_model": 8, "nhead": 2, "num_layers": 1, "dropout": 0.1},
    "cxr": {"name": "small_cnn", "channels": [4], "out_dim": 8},
    "tabular": {"name": "tabular_mlp", "hidden": 8, "out_dim": 8, "dropout": 0.1},
    "mri": {"name": "small_cnn_3d", "channels": [2], "out_dim": 8},
}


def spec(cohort, method, out, epochs=2, seed=3):
    cfg = load_section(MethodConfig, method_path(method)).check(method)
    settings = TrainSettings(epochs=epochs, batch_size=8, num_threads=1, patience=10, device="cpu")
    return RunSpec(cohort, method, cfg, "tiny", TINY, settings, seed, out)


@pytest.mark.parametrize("method", ["late_fusion", "sam", "masam"])
def test_each_method_trains_and_writes_a_run_folder(mimic_cohort, tmp_path, method):
    summary = fit(spec(mimic_cohort, method, tmp_path / method), track=False)
    files = {p.name for p in (tmp_path / method).iterdir()}
    assert {"config.yaml", "checkpoint_last.pt", "checkpoint_best.pt", "history.json", "train_summary.json"} <= files
    assert summary["epochs_run"] == 2 and summary["best_val_metric"] is not None


def test_multiclass_cohort_trains_with_tabular_and_mri(adni_cohort, tmp_path):
    summary = fit(spec(adni_cohort, "masam", tmp_path / "adni"), track=False)
    assert summary["metric"] == "val_macro_map"
    rows, probs = predict_split(tmp_path / "adni", load_cohort(adni_cohort), "test")
    assert probs.shape == (len(rows), 3)
    assert torch.allclose(torch.from_numpy(probs.sum(1)), torch.ones(len(rows)), atol=1e-5)


def test_killed_and_resumed_run_ends_like_an_uninterrupted_one(mimic_cohort, tmp_path):
    full = fit(spec(mimic_cohort, "masam", tmp_path / "full", epochs=3), track=False)
    with pytest.raises(StopTraining):
        fit(spec(mimic_cohort, "masam", tmp_path / "killed", epochs=3), track=False, stop_after_epoch=1)
    resumed = fit(spec(mimic_cohort, "masam", tmp_path / "killed", epochs=3), resume=True, track=False)
    assert resumed["best_val_metric"] == full["best_val_metric"]
    assert json.loads((tmp_path / "killed" / "history.json").read_text()) == json.loads(
        (tmp_path / "full" / "history.json").read_text()
    )
    a, _ = load_trained_model(tmp_path / "full")
    b, _ = load_trained_model(tmp_path / "killed")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def test_same_seed_gives_identical_metrics_on_cpu(mimic_cohort, tmp_path):
    a = fit(spec(mimic_cohort, "sam", tmp_path / "a"), track=False)
    b = fit(spec(mimic_cohort, "sam", tmp_path / "b"), track=False)
    assert (tmp_path / "a" / "history.json").read_text() == (tmp_path / "b" / "history.json").read_text()
    assert a["best_val_metric"] == b["best_val_metric"]


def test_mlflow_run_has_params_epoch_and_step_metrics(mimic_cohort, tmp_path, tracking_uri, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    s = spec(mimic_cohort, "masam", tmp_path / "tracked")
    s.settings.log_every = 1
    summary = fit(s, track=True)
    mlflow.set_tracking_uri(tracking_uri)
    run = mlflow.MlflowClient().get_run(summary["mlflow_run_id"])
    assert run.data.params["method.method"] == "masam"
    assert run.data.params["method.options.rho"] == "0.3"
    assert "val_macro_auprc" in run.data.metrics
    assert "step/gamma_cxr" in run.data.metrics and "step/aps_ehr" in run.data.metrics
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_macro_auprc")
    assert [m.step for m in history] == [1, 2]


def test_every_method_config_and_preset_is_valid():
    from pathlib import Path

    for path in sorted(Path(method_path("masam")).parent.glob("*.yaml")):
        load_section(MethodConfig, path).check(str(path))
    for preset in ("small", "paper"):
        assert {"ehr", "cxr", "tabular", "mri"} <= set(load_section(ModelPreset, preset_path(preset)).encoders)


def test_unknown_method_is_a_one_line_error(mimic_cohort, tmp_path, capsys):
    code = main(["train", "--cohort", str(mimic_cohort), "--method", "magic", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "no such method config" in err and "masam" in err


def test_missing_cohort_is_a_one_line_error(tmp_path, capsys):
    code = main(["train", "--cohort", str(tmp_path / "nope"), "--method", "late_fusion", "--no-tracking"])
    assert code == 2 and "cohort folder not found" in capsys.readouterr().err


def test_unknown_method_option_names_the_key(tmp_path, mimic_cohort, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: masam\noptions:\n  rhoo: 0.1\n")
    code = main(["train", "--cohort", str(mimic_cohort), "--method", "masam", "--config", str(bad), "--no-tracking"])
    assert code == 2 and "options.rhoo: unknown option" in capsys.readouterr().err


def test_early_stopping_stops_after_patience_epochs_without_improvement(mimic_cohort, tmp_path, monkeypatch):
    # A validation metric that never improves: epoch 1 sets the best, epoch 2 is the first bad epoch,
    # and patience 1 stops right there: exactly 2 epochs (one more would be the off-by-one `>`).
    import clinfuse.pipeline.trainer as trainer

    monkeypatch.setattr(trainer, "evaluate_split", lambda *a, **k: {"macro_auprc": 0.5})
    run = spec(mimic_cohort, "late_fusion", tmp_path / "run", epochs=6)
    run.settings.patience = 1
    summary = fit(run, track=False)
    assert summary["epochs_run"] == 2
    assert summary["best_epoch"] == 1
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]


def test_patience_counts_only_consecutive_epochs_without_improvement(mimic_cohort, tmp_path, monkeypatch):
    # scores 0.1, 0.3, 0.2, 0.4, 0.35, 0.3: with patience 2 the run stops after the 6th epoch (two bad
    # epochs in a row after the best at epoch 4), not after the 3rd (one bad epoch, then an improvement).
    import clinfuse.pipeline.trainer as trainer

    scores = iter([0.1, 0.3, 0.2, 0.4, 0.35, 0.3, 0.9, 0.9])
    monkeypatch.setattr(trainer, "evaluate_split", lambda *a, **k: {"macro_auprc": next(scores)})
    run = spec(mimic_cohort, "late_fusion", tmp_path / "run", epochs=8)
    run.settings.patience = 2
    summary = fit(run, track=False)
    assert summary["epochs_run"] == 6 and summary["best_epoch"] == 4


def test_cosine_schedule_steps_once_per_epoch_and_logs_the_rate_each_epoch_trained_with(mimic_cohort, tmp_path):
    # CosineAnnealingLR with T_max = epochs = 3, stepped after each epoch: the rate of epoch e (0-based)
    # is lr * (1 + cos(pi * e / 3)) / 2 = lr * [1, 3/4, 1/4]. Stepping per batch would end epoch 1 far lower.
    run = spec(mimic_cohort, "late_fusion", tmp_path / "run", epochs=3)
    run.settings.lr = 0.004
    run.settings.schedule = "cosine"
    fit(run, track=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [r["lr"] for r in history] == pytest.approx([0.004, 0.003, 0.001], rel=1e-9)


def test_constant_schedule_logs_the_same_rate_every_epoch(mimic_cohort, tmp_path):
    run = spec(mimic_cohort, "late_fusion", tmp_path / "run", epochs=2)
    run.settings.lr = 0.004
    run.settings.schedule = "none"
    fit(run, track=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [r["lr"] for r in history] == [0.004, 0.004]

"""Training never mixes configurations, never trains past its stop, and fails loudly on divergence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from clinfuse.etl.errors import ConfigError
from clinfuse.models.methods.late_fusion import LateFusion
from clinfuse.pipeline.cli import main
from clinfuse.pipeline.trainer import StopTraining, TrainingDiverged, fit
from tests.training.test_trainer import spec

ROOT = Path(__file__).resolve().parents[2]


def _params(tmp_path, **train) -> Path:
    body = {"epochs": 2, "batch_size": 8, "num_threads": 1, "device": "cpu", **train}
    path = tmp_path / "params.yaml"
    path.write_text("train:\n" + "".join(f"  {k}: {v}\n" for k, v in body.items()))
    return path


def test_a_config_file_that_trains_another_method_than_named_is_refused(mimic_cohort, tmp_path, capsys):
    code = main(["--params", str(_params(tmp_path)), "train", "--cohort", str(mimic_cohort), "--method", "masam",
                 "--config", str(ROOT / "configs/methods/sam.yaml"), "--out", str(tmp_path / "run"), "--no-tracking"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "trains method 'sam', but --method says 'masam'" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("option", "value", "message"), [
    ("rho", -0.1, "rho must be in [0, inf)"),
    ("alpha", 1.5, "alpha must be in [0, 1]"),
    ("beta", 1.0, "beta must be in [0, 1)"),
    ("lambda_m", -1, "lambda_m[ehr] must be in [0, inf)"),
])
def test_out_of_range_method_options_are_one_line_errors(mimic_cohort, tmp_path, capsys, option, value, message):
    config = tmp_path / "masam_bad.yaml"
    config.write_text(f"method: masam\noptions:\n  {option}: {value}\n")
    code = main(["--params", str(_params(tmp_path)), "train", "--cohort", str(mimic_cohort), "--method", "masam_bad",
                 "--config", str(config), "--out", str(tmp_path / "run"), "--no-tracking"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err


@pytest.mark.parametrize(("key", "value"), [("lr", 0), ("lr", -1), ("epochs", 0), ("batch_size", 0)])
def test_out_of_range_training_settings_name_the_key(mimic_cohort, tmp_path, capsys, key, value):
    code = main(["--params", str(_params(tmp_path, **{key: value})), "train", "--cohort", str(mimic_cohort),
                 "--method", "late_fusion", "--out", str(tmp_path / "run"), "--no-tracking"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and f"train.{key}" in err


def test_cuda_without_cuda_is_a_one_line_error(mimic_cohort, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = main(["--params", str(_params(tmp_path)), "train", "--cohort", str(mimic_cohort), "--method",
                 "late_fusion", "--device", "cuda", "--out", str(tmp_path / "run"), "--no-tracking"])
    assert code == 2 and "no CUDA device" in capsys.readouterr().err


def test_resuming_with_another_learning_rate_or_method_is_refused(mimic_cohort, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(StopTraining):
        fit(spec(mimic_cohort, "masam", run, epochs=3), track=False, stop_after_epoch=1)
    other_lr = spec(mimic_cohort, "masam", run, epochs=3)
    other_lr.settings.lr = 0.5
    with pytest.raises(ConfigError, match=r"train.lr: 0.002 -> 0.5"):
        fit(other_lr, resume=True, track=False)
    with pytest.raises(ConfigError, match="cannot resume: the run's configuration changed"):
        fit(spec(mimic_cohort, "sam", run, epochs=3), resume=True, track=False)


def test_resuming_an_early_stopped_run_trains_no_further_epoch(mimic_cohort, tmp_path):
    run = tmp_path / "run"
    first = spec(mimic_cohort, "late_fusion", run, epochs=6)
    first.settings.patience = 1
    summary = fit(first, track=False)
    assert summary["epochs_run"] < 6, "the fixture must stop early for this test to mean anything"
    again = spec(mimic_cohort, "late_fusion", run, epochs=6)
    again.settings.patience = 1
    resumed = fit(again, resume=True, track=False)
    assert resumed["epochs_run"] == summary["epochs_run"]
    assert len(json.loads((run / "history.json").read_text())) == summary["epochs_run"]


def _steps_per_epoch(cohort: Path, batch_size: int = 8) -> int:
    n_train = int((pd.read_parquet(cohort / "samples.parquet")["split"] == "train").sum())
    return -(-n_train // batch_size)


def test_a_nan_loss_stops_the_run_naming_epoch_and_step(mimic_cohort, tmp_path, monkeypatch):
    real_step = LateFusion.step
    calls = {"n": 0}
    per_epoch = _steps_per_epoch(mimic_cohort)

    def step(self, batch):
        calls["n"] += 1
        metrics = real_step(self, batch)
        if calls["n"] == per_epoch + 2:  # epoch 2, step 2
            metrics["loss_total"] = torch.tensor(float("nan"))
        return metrics

    monkeypatch.setattr(LateFusion, "step", step)
    match = rf"diverged at epoch 2, step 2 \(global step {per_epoch + 2}\)"
    with pytest.raises(TrainingDiverged, match=match):
        fit(spec(mimic_cohort, "late_fusion", tmp_path / "run", epochs=3), track=False)


def _killed_training(cohort: Path, out: Path, uri: str, kill_at_step: int) -> None:
    """Run `clinfuse train` in a real process that SIGKILLs itself inside step `kill_at_step`."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from clinfuse.models.methods.late_fusion import LateFusion
        real, n = LateFusion.step, [0]
        def step(self, batch):
            n[0] += 1
            if n[0] == {kill_at_step}:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(self, batch)
        LateFusion.step = step
        from clinfuse.pipeline.cli import main
        main(["--params", {str(out.parent / "params.yaml")!r}, "train", "--cohort", {str(cohort)!r},
              "--method", "late_fusion", "--seed", "3", "--out", {str(out)!r}])
    """)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


@pytest.mark.parametrize("kill_at_step", [2, 6])  # before the first checkpoint; in epoch 2 after one
def test_a_killed_run_is_resumed_into_the_same_mlflow_run_without_duplicate_steps(
        mimic_cohort, tmp_path, monkeypatch, kill_at_step):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    _params(tmp_path, epochs=3, log_every=1)
    out = tmp_path / "run"
    _killed_training(mimic_cohort, out, uri, kill_at_step)
    killed_id = json.loads((out / "mlflow_run.json").read_text())["run_id"]
    assert main(["--params", str(tmp_path / "params.yaml"), "train", "--cohort", str(mimic_cohort), "--method",
                 "late_fusion", "--seed", "3", "--out", str(out), "--resume"]) == 0
    client = mlflow.MlflowClient(tracking_uri=uri)
    assert json.loads((out / "train_summary.json").read_text())["mlflow_run_id"] == killed_id
    run = client.get_run(killed_id)
    assert run.info.status == "FINISHED"
    assert len(client.search_runs([run.info.experiment_id])) == 1
    steps = [m.step for m in client.get_metric_history(killed_id, "step/loss_total")]
    assert sorted(steps) == sorted(set(steps)) == list(range(1, 3 * _steps_per_epoch(mimic_cohort) + 1))


def test_a_run_killed_and_started_afresh_marks_the_killed_mlflow_run(mimic_cohort, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    _params(tmp_path)
    out = tmp_path / "run"
    _killed_training(mimic_cohort, out, uri, 2)
    killed_id = json.loads((out / "mlflow_run.json").read_text())["run_id"]
    client = mlflow.MlflowClient(tracking_uri=uri)
    assert client.get_run(killed_id).info.status == "RUNNING"
    assert main(["--params", str(tmp_path / "params.yaml"), "train", "--cohort", str(mimic_cohort), "--method",
                 "late_fusion", "--seed", "3", "--out", str(out)]) == 0
    assert client.get_run(killed_id).info.status == "KILLED"

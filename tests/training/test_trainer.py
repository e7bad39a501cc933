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


# --- small runs and helpers checked by hand (each needs at most tmp_path) ----------------------------------


class _Recorder:
    """Stands in for the MLflow tracker: keeps what fit would log."""

    def __init__(self, enabled, experiment, run_name, run_id, params):
        self.enabled, self.experiment, self.run_name, self.run_id = enabled, experiment, run_name, run_id
        self.logged, self.summaries, self.artifacts, self.tag_sets, self.ended = [], [], [], [], []

    def metrics(self, values, step):
        self.logged.append((step, dict(values)))

    def summary(self, values):
        self.summaries.append(dict(values))

    def artifact(self, path, folder=None):
        self.artifacts.append((path.name, folder))

    def tags(self, tags):
        self.tag_sets.append(dict(tags))

    def lineage(self, cohort, splits, description):
        self.lineage_splits = sorted(splits)

    def curves(self, history, title):
        self.curve_epochs = [r["epoch"] for r in history]

    def end(self, status="FINISHED"):
        self.ended.append(status)


def _four_epoch_run(tmp_path):
    """12 rows (8 train, batch 4: 2 steps per epoch), validation macro AUPRC 0.2, 0.5, 0.4, 0.3, patience 2,
    a 6-epoch cosine schedule at lr 0.006, alignment every 3 steps: the run stops after epoch 4, best at 2."""
    import contextlib
    import io
    from unittest import mock

    import clinfuse.pipeline.trainer as trainer
    from tests.fixtures.cohorts import write_cohort

    cohort = write_cohort(tmp_path / "cohort", "mimic", n=12)
    scores = iter([(0.2, 0.6), (0.5, None), (0.4, 0.7), (0.3, 0.8), (0.9, 0.9), (0.9, 0.9)])
    run = spec(cohort, "late_fusion", tmp_path / "run", epochs=6)
    run.settings.batch_size, run.settings.patience, run.settings.lr = 4, 2, 0.006
    run.settings.log_every, run.settings.alignment_every = 1, 3
    printed = io.StringIO()
    recorders = []
    with mock.patch.object(trainer, "_Tracker", lambda *a: recorders.append(_Recorder(*a)) or recorders[-1]), \
            mock.patch.object(trainer, "evaluate_split",
                              lambda *a, **k: dict(zip(("macro_auprc", "macro_auroc"), next(scores), strict=True))), \
            contextlib.redirect_stdout(printed):
        summary = fit(run, track=True)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    return summary, history, recorders[0], printed.getvalue()


def test_a_run_stops_after_patience_bad_epochs_and_reports_its_best_epoch(tmp_path):
    summary, history, _, printed = _four_epoch_run(tmp_path)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert {k: summary[k] for k in ("best_epoch", "best_val_metric", "epochs_run", "steps", "metric",
                                    "still_improving", "processes", "label_noise")} == {
        "best_epoch": 2, "best_val_metric": 0.5, "epochs_run": 4, "steps": 8, "metric": "val_macro_auprc",
        "still_improving": False, "processes": 1, "label_noise": {"rate": 0.0, "flipped_entries": 0}}
    assert json.loads((tmp_path / "run" / "train_summary.json").read_text()) == summary
    best = torch.load(tmp_path / "run" / "checkpoint_best.pt", weights_only=True)
    assert best["epoch"] == 2 and best["val_metric"] == 0.5
    last = torch.load(tmp_path / "run" / "checkpoint_last.pt", weights_only=True)["state"]
    assert (last["epoch"], last["bad_epochs"], last["best_epoch"], last["finished"]) == (4, 2, 2, True)
    assert "best val macro_auprc 0.500 at epoch 2/4 in" in printed and "still improving" not in printed


def test_each_epoch_records_its_validation_scores_and_the_rate_it_trained_with(tmp_path):
    import math

    _, history, _, _ = _four_epoch_run(tmp_path)
    assert [r["val_macro_auprc"] for r in history] == [0.2, 0.5, 0.4, 0.3]
    # the AUROC only where the metrics have one (epoch 2's is None)
    assert [r.get("val_macro_auroc") for r in history] == [0.6, None, 0.7, 0.8]
    assert "val_macro_auroc" not in history[1]
    # cosine over 6 epochs, stepped once per epoch: lr * (1 + cos(pi * e / 6)) / 2 for e = 0..3
    assert [r["lr"] for r in history] == pytest.approx([0.006 * (1 + math.cos(math.pi * e / 6)) / 2
                                                        for e in range(4)], rel=1e-9)
    assert all(r["train_loss_total"] > 0 for r in history)


def test_the_tracker_gets_step_epoch_alignment_and_best_metrics_at_their_steps(tmp_path):
    _, history, tracker, _ = _four_epoch_run(tmp_path)
    assert tracker.enabled and tracker.run_name.startswith("late_fusion") and tracker.ended == ["FINISHED"]
    steps = [step for step, values in tracker.logged if "step/loss_total" in values]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [step for step, values in tracker.logged if "align/gamma_ehr" in values] == [3, 6]
    epochs = [(step, values) for step, values in tracker.logged if "val_macro_auprc" in values]
    assert [step for step, _ in epochs] == [1, 2, 3, 4]
    assert [values for _, values in epochs] == [{k: v for k, v in r.items() if k != "epoch"} for r in history]
    assert tracker.logged[-1] == (4, {"best_val_macro_auprc": 0.5})
    assert tracker.summaries[0]["best_epoch"] == 2.0 and tracker.summaries[0]["last_epoch"] == 4.0
    assert tracker.summaries[0]["best_val_macro_auprc"] == 0.5
    assert tracker.artifacts == [("checkpoint_best.pt", "checkpoint"), ("config.yaml", None), ("history.json", None),
                                 ("alignment.json", None)]
    assert tracker.tag_sets == [{"cohort": "cohort", "method": "late_fusion", "seed": "3"}]
    assert tracker.lineage_splits == ["test", "train", "val"] and tracker.curve_epochs == [1, 2, 3, 4]
    alignment = json.loads((tmp_path / "run" / "alignment.json").read_text())
    assert [r["step"] for r in alignment] == [3, 6] and set(alignment[0]) == {"step", "ehr", "cxr"}


def _fake_mlflow_tracker(logged_upto):
    """A tracker whose MLflow only records the calls (as for a resumed run that logged up to `logged_upto`)."""
    from types import SimpleNamespace

    from clinfuse.pipeline.trainer import _Tracker

    tracker, calls = _Tracker(False, "e", "r", None, {}), []
    tracker.enabled, tracker.retry, tracker.logged_upto = True, lambda write: write(), dict(logged_upto)
    tracker.mlflow = SimpleNamespace(log_metrics=lambda values, step=None: calls.append((step, values)))
    return tracker, calls


def test_a_resumed_run_logs_no_step_twice_per_metric_prefix_and_drops_missing_values():
    tracker, calls = _fake_mlflow_tracker({"step/": 10, "": 2})
    tracker.metrics({"step/loss_total": 0.5, "align/gamma_ehr": 0.25}, 10)  # step/ already has step 10
    tracker.metrics({"val_macro_auprc": 0.4, "lr": 1, "val_macro_auroc": None}, 3)
    tracker.metrics({"val_macro_auprc": 0.3}, 2)  # epoch 2 is in the store: nothing is written
    tracker.metrics({"step/loss_total": 0.5}, 11)
    assert calls == [(10, {"align/gamma_ehr": 0.25}), (3, {"val_macro_auprc": 0.4, "lr": 1.0}),
                     (11, {"step/loss_total": 0.5})]
    assert isinstance(calls[1][1]["lr"], float)
    fresh, calls = _fake_mlflow_tracker({})
    fresh.metrics({"step/loss_total": 0.5, "val_macro_auprc": 0.4}, 1)  # a new run logs from step 1 on
    assert calls == [(1, {"step/loss_total": 0.5, "val_macro_auprc": 0.4})]


def test_the_best_epoch_summary_is_logged_without_a_step_and_an_empty_one_not_at_all():
    tracker, calls = _fake_mlflow_tracker({"": 9})
    tracker.summary({})
    tracker.summary({"best_epoch": 2, "best_val_macro_auprc": 0.5})
    assert calls == [(None, {"best_epoch": 2.0, "best_val_macro_auprc": 0.5})]


def test_step_and_alignment_metrics_are_deduplicated_apart_from_epoch_metrics():
    from clinfuse.pipeline.trainer import _step_prefix

    assert [_step_prefix(k) for k in ("step/loss_total", "align/gamma_cxr", "epoch/weight_ehr", "val_macro_auprc",
                                      "lr", "align", "best/step/x", "step/loss/ehr")] == ["step/", "align/", "", "", "", "", "", "step/"]


def test_a_method_hooks_tensors_become_floats_in_their_order():
    from clinfuse.pipeline.trainer import _host

    assert _host({"b": torch.tensor(1.5), "a": torch.tensor(2)}) == {"b": 1.5, "a": 2.0}
    assert list(_host({"b": torch.tensor(1.5), "a": torch.tensor(2)})) == ["b", "a"]
    assert _host({}) == {}


def test_a_non_finite_loss_names_the_epoch_the_step_within_it_and_the_global_step():
    from clinfuse.pipeline.trainer import TrainingDiverged, _check_finite

    _check_finite(torch.tensor(-1), 0, 0)  # -1: every loss so far was finite
    with pytest.raises(TrainingDiverged) as err:
        _check_finite(torch.tensor(7), 1, 4)
    assert str(err.value) == ("diverged at epoch 2, step 3 (global step 7): the training loss is NaN or infinite; "
                              "lower train.lr or check the inputs")
    with pytest.raises(TrainingDiverged, match=r"at epoch 1, step 0 \(global step 0\)"):
        _check_finite(torch.tensor(0), 0, 0)


def test_resuming_names_up_to_three_changed_keys_and_counts_the_rest():
    from clinfuse.etl.errors import ConfigError
    from clinfuse.pipeline.trainer import check_resumable

    train = TrainSettings(lr=0.001, epochs=3).model_dump()
    saved = {"cohort": "a", "method": {"options": {"rho": 0.3, "k": 1}}, "train": train}
    # the cohort path and the device may change between a kill and its resume
    check_resumable(saved, {**saved, "cohort": "b", "train": {**train, "device": "cuda"}})
    changed = {"cohort": "a", "method": {"options": {"rho": 0.5, "k": 2}}, "train": {**train, "lr": 0.002, "epochs": 4}}
    with pytest.raises(ConfigError) as err:
        check_resumable(saved, changed)
    assert str(err.value).startswith("cannot resume: the run's configuration changed (method.options.k: 1 -> 2, "
                                     "method.options.rho: 0.3 -> 0.5, train.epochs: 3 -> 4 (+1 more)); ")
    with pytest.raises(ConfigError, match=r"changed \(train.lr: 0.001 -> 0.002\); resume with"):
        check_resumable(saved, {**saved, "train": {**train, "lr": 0.002}})
    three = {**changed, "train": {**train, "epochs": 4}}  # exactly three: none left to count
    with pytest.raises(ConfigError, match=r"train.epochs: 3 -> 4\); resume with"):
        check_resumable(saved, three)
    # an option the saved run did not have at all is a change too
    with pytest.raises(ConfigError, match=r"changed \(method.options.alpha: None -> 0.5\)"):
        check_resumable(saved, {**saved, "method": {"options": {"rho": 0.3, "k": 1, "alpha": 0.5}}})


def test_a_setting_added_after_the_run_started_counts_as_its_default_on_resume():
    from clinfuse.etl.errors import ConfigError
    from clinfuse.pipeline.trainer import check_resumable

    default = TrainSettings().model_dump()
    check_resumable({"train": {"lr": default["lr"]}}, {"train": default})
    with pytest.raises(ConfigError, match=r"train.label_noise: 0.0 -> 0.2\)"):
        check_resumable({"train": {"lr": default["lr"]}}, {"train": {**default, "label_noise": 0.2}})


def test_alignment_is_probed_on_the_first_training_rows_and_logged_at_the_global_step():
    from types import SimpleNamespace
    from unittest import mock

    import clinfuse.pipeline.trainer as trainer

    probed = []
    tracker, calls = _fake_mlflow_tracker({})
    state = {"global_step": 5}
    gammas = {"ehr": torch.tensor(0.25), "cxr": torch.tensor(-0.5, dtype=torch.float64)}
    model = object()

    class Rows(SimpleNamespace):
        def __len__(self):
            return 6

    train = Rows(y=torch.zeros(6, 1), batch=lambda index: probed.append(index.tolist()) or "probe")
    with mock.patch.object(trainer, "gradient_alignment",
                           lambda m, probe, task: gammas if (m, probe, task) == (model, "probe", "binary") else {}):
        trainer._log_alignment(model, train, "binary", 4, state, tracker)
        state["global_step"] = 7
        trainer._log_alignment(model, train, "binary", 10, state, tracker)
    assert probed == [[0, 1, 2, 3], [0, 1, 2, 3, 4, 5]]
    assert state["alignment"] == [{"step": 5, "ehr": 0.25, "cxr": -0.5}, {"step": 7, "ehr": 0.25, "cxr": -0.5}]
    assert calls == [(5, {"align/gamma_ehr": 0.25, "align/gamma_cxr": -0.5}),
                     (7, {"align/gamma_ehr": 0.25, "align/gamma_cxr": -0.5})]


def test_the_alignment_probe_rows_are_indexed_on_the_device_the_split_lives_on():
    from types import SimpleNamespace
    from unittest import mock

    import clinfuse.pipeline.trainer as trainer

    class Rows(SimpleNamespace):
        def __len__(self):
            return 6

    devices = []
    train = Rows(y=torch.zeros(6, 1, device="meta"), batch=lambda index: devices.append(index.device) or "probe")
    with mock.patch.object(trainer, "gradient_alignment", lambda *a: {}):
        trainer._log_alignment(None, train, "binary", 4, {"global_step": 1}, None)
    assert devices == [torch.device("meta")]


def test_a_method_without_unimodal_heads_logs_no_alignment():
    from types import SimpleNamespace
    from unittest import mock

    import clinfuse.pipeline.trainer as trainer

    class Rows(SimpleNamespace):
        def __len__(self):
            return 3

    tracker, calls = _fake_mlflow_tracker({})
    state = {"global_step": 5}
    with mock.patch.object(trainer, "gradient_alignment", lambda *a: {}):
        trainer._log_alignment(None, Rows(y=torch.zeros(3, 1), batch=lambda index: "probe"), "binary", 4, state,
                               tracker)
    assert state == {"global_step": 5} and calls == []


def test_label_noise_flips_the_training_labels_in_place_and_says_how_many():
    import contextlib
    import io
    from types import SimpleNamespace

    from clinfuse.pipeline.trainer import _apply_label_noise

    cohort = SimpleNamespace(task_type="binary", num_outputs=1)
    train = SimpleNamespace(y=torch.zeros(4, 1))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert _apply_label_noise(train, cohort, 0.0, 0) == 0 and torch.equal(train.y, torch.zeros(4, 1))
    assert printed.getvalue() == ""  # no noise, no line
    with contextlib.redirect_stdout(printed):
        flipped = _apply_label_noise(train, cohort, 0.5, 7)
    assert flipped == 2 and int(train.y.sum()) == 2 and train.y.shape == (4, 1)
    assert printed.getvalue() == "label noise: flipped 2 training label entries (rate 0.5, seed 7)\n"


def test_multiclass_label_noise_moves_labels_to_other_classes_as_the_run_seed_says():
    import contextlib
    import io
    from types import SimpleNamespace

    from clinfuse.pipeline.label_noise import flip_labels
    from clinfuse.pipeline.trainer import _apply_label_noise

    y = torch.full((20,), 2)
    train = SimpleNamespace(y=y.clone())
    with contextlib.redirect_stdout(io.StringIO()):
        assert _apply_label_noise(train, SimpleNamespace(task_type="multiclass", num_outputs=3), 0.5, 7) == 10
    assert set(train.y.tolist()) == {0, 1, 2} and int((train.y != 2).sum()) == 10
    assert torch.equal(train.y, torch.from_numpy(flip_labels(y.numpy(), 0.5, "multiclass", 3, 7)[0]))


def test_noisy_labels_go_back_to_the_device_the_split_lives_on():
    import contextlib
    import io
    from types import SimpleNamespace

    from clinfuse.pipeline.trainer import _apply_label_noise

    # labels on another device than the CPU (where flip_labels works): only their device is read back
    train = SimpleNamespace(y=SimpleNamespace(cpu=lambda: torch.zeros(4, 1), device=torch.device("meta")))
    with contextlib.redirect_stdout(io.StringIO()):
        _apply_label_noise(train, SimpleNamespace(task_type="binary", num_outputs=1), 0.5, 7)
    assert train.y.device == torch.device("meta") and train.y.shape == (4, 1)


def test_the_validation_score_is_the_task_metric_of_the_prediction_head_on_cpu_in_full_precision():
    from types import SimpleNamespace
    from unittest import mock

    import numpy as np

    import clinfuse.pipeline.trainer as trainer

    # y = 1, 0, 0 scored 0.6, 0.2, 0.7: the positive ranks second -> AUPRC 1/2, AUROC 1/2
    calls = []

    def predicted(model, tensors, task_type, head, batch_size, bf16):
        calls.append((model, task_type, head, batch_size, bf16))
        return tensors.probs

    def model_on(device):
        return SimpleNamespace(parameters=lambda: iter([SimpleNamespace(device=torch.device(device))]))

    tensors = SimpleNamespace(y=torch.tensor([[1.0], [0.0], [0.0]]), probs=np.array([[0.6], [0.2], [0.7]]))
    cohort = SimpleNamespace(task_type="binary", label_names=["death"])
    cpu, cuda = model_on("cpu"), model_on("cuda")
    with mock.patch.object(trainer, "predict_split_parallel", predicted):
        metrics = trainer.evaluate_split(cpu, tensors, cohort, "fused", TrainSettings(bf16=True, eval_batch_size=5))
        trainer.evaluate_split(cuda, tensors, cohort, "fused", TrainSettings(bf16=True))
        trainer.evaluate_split(cuda, tensors, cohort, "fused", TrainSettings(bf16=False))
        # three classes, each row's true class scored highest: mean average precision 1
        classes = SimpleNamespace(y=torch.tensor([0, 1, 2]), probs=np.array([[.8, .1, .1], [.2, .7, .1], [.1, .3, .6]]))
        three = trainer.evaluate_split(cpu, classes, SimpleNamespace(task_type="multiclass", label_names=["a", "b", "c"]),
                                       "fused", TrainSettings())
    assert metrics["macro_auprc"] == pytest.approx(0.5) and metrics["macro_auroc"] == pytest.approx(0.5)
    assert calls[0] == (cpu, "binary", "fused", 5, False)  # bf16 autocast is for CUDA only
    assert [c[4] for c in calls[1:3]] == [True, False]
    assert three["macro_map"] == pytest.approx(1.0) and three["headline"] == "macro_map"


def test_the_same_seed_seeds_python_numpy_and_torch_alike_and_numpy_with_its_low_32_bits():
    import random

    import numpy as np

    from clinfuse.pipeline.trainer import seed_everything

    def draws():
        return random.random(), float(np.random.random()), float(torch.rand(()))

    seed_everything(3)
    first = draws()
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    assert draws() == first
    seed_everything(2**32 + 5)  # numpy takes seeds below 2**32 only
    big = draws()
    random.seed(2**32 + 5), np.random.seed(5), torch.manual_seed(2**32 + 5)
    assert draws() == big


def test_a_role_in_the_method_options_becomes_the_cohorts_modality_and_a_bad_one_names_the_config():
    from types import SimpleNamespace

    from clinfuse.etl.errors import ConfigError
    from clinfuse.pipeline.trainer import with_cohort_options

    run = RunSpec("c", "unimodal_image", load_section(MethodConfig, method_path("unimodal_image")), "tiny", TINY,
                  TrainSettings(), 3, "out")
    resolved = with_cohort_options(run, SimpleNamespace(modalities=["ehr", "cxr"], name="mimic"))
    assert resolved.method.options == {"modality": "cxr"} and resolved.method.method == "unimodal"
    assert run.method.options == {"modality": "image"} and resolved.seed == 3 and resolved.out_dir == "out"
    with pytest.raises(ConfigError) as err:
        with_cohort_options(run, SimpleNamespace(modalities=["ehr"], name="ehr-only"))
    assert str(err.value).startswith("method config 'unimodal_image' on cohort ehr-only: options: unimodal: "
                                     "modality role 'image' needs a cohort with two modalities")


def test_a_method_undefined_for_the_task_names_method_and_cohort():
    from types import SimpleNamespace

    from clinfuse.etl.errors import ConfigError
    from clinfuse.pipeline.trainer import check_method_task

    pmr = load_section(MethodConfig, method_path("pmr"))
    check_method_task("pmr", pmr, SimpleNamespace(task_type="binary", name="mortality"))
    with pytest.raises(ConfigError, match=r"^method 'pmr' on cohort phenotype: PMR needs single-label classes"):
        check_method_task("pmr", pmr, SimpleNamespace(task_type="multilabel", name="phenotype"))


def test_the_run_folder_records_the_configuration_it_trained_with(tmp_path):
    import yaml

    _four_epoch_run(tmp_path)
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert list(config) == ["cohort", "cohort_name", "dataset", "task", "task_type", "modalities", "label_names",
                            "input_shapes", "method_name", "method", "prediction_head", "preset", "encoders", "train",
                            "seed"]
    assert (config["cohort"], config["cohort_name"], config["dataset"], config["task"], config["task_type"]) == (
        str(tmp_path / "cohort"), "cohort", "mimic", "phenotype", "multilabel")
    assert config["modalities"] == ["ehr", "cxr"] and config["label_names"] == ["Sepsis", "Shock", "CHF"]
    assert config["input_shapes"] == {"ehr": [48, 24], "cxr": [1, 16, 16]}
    assert config["method_name"] == "late_fusion" and config["method"]["method"] == "late_fusion"
    assert "options" in config["method"] and config["prediction_head"] == "fused" and config["preset"] == "tiny"
    assert config["encoders"] == {"ehr": TINY["ehr"], "cxr": TINY["cxr"]} and config["seed"] == 3
    assert config["train"]["lr"] == 0.006 and config["train"]["patience"] == 2


def _scripted_run(tmp_path, scores, epochs, patience, drop_validation=False, batch_size=4, **fit_args):
    """A 12-row cohort (8 train rows, batch 4: 2 steps per epoch; every step logged) whose validation macro
    AUPRC per epoch is `scores` (`drop_validation`: its validation rows moved to test, so none is scored);
    returns (summary, history, recorder, printed) or the exception fit raised in place of the summary."""
    import contextlib
    import io
    from unittest import mock

    import pandas as pd

    import clinfuse.pipeline.trainer as trainer
    from tests.fixtures.cohorts import write_cohort

    cohort = write_cohort(tmp_path / "cohort", "mimic", n=12)
    if drop_validation:
        samples = pd.read_parquet(cohort / "samples.parquet")
        samples["split"] = samples["split"].replace("val", "test")
        samples.to_parquet(cohort / "samples.parquet")
    run = spec(cohort, "late_fusion", tmp_path / "run", epochs=epochs)
    run.settings.batch_size, run.settings.patience, run.settings.log_every = batch_size, patience, 1
    scripted = iter(scores)
    recorders, printed = [], io.StringIO()
    with mock.patch.object(trainer, "_Tracker", lambda *a: recorders.append(_Recorder(*a)) or recorders[-1]), \
            mock.patch.object(trainer, "evaluate_split", lambda *a, **k: {"macro_auprc": next(scripted)}), \
            contextlib.redirect_stdout(printed):
        try:
            summary = fit(run, track=True, **fit_args)
        except StopTraining as stopped:
            summary = stopped
    history_file = tmp_path / "run" / "history.json"
    history = json.loads(history_file.read_text()) if history_file.is_file() else None
    return summary, history, recorders[0], printed.getvalue()


def _last_state(tmp_path):
    return torch.load(tmp_path / "run" / "checkpoint_last.pt", weights_only=True)["state"]


def test_without_validation_rows_every_epoch_runs_and_the_last_is_kept(tmp_path):
    # Nothing to select on: no early stopping however small the patience, the last epoch's weights kept,
    # no best score, and the kept last epoch is not "still improving" (it was kept by rule).
    summary, history, _, printed = _scripted_run(tmp_path, [], epochs=3, patience=1, drop_validation=True)
    assert "WARNING: cohort cohort: no validation split: no epoch can be chosen on a validation score, so " \
        "training runs every epoch (no early stopping) and keeps the last one" in printed
    assert printed.count("no validation split") == 1  # said once, by the cohort's warnings
    assert [r["epoch"] for r in history] == [1, 2, 3] and [r["val_macro_auprc"] for r in history] == [None] * 3
    assert (summary["epochs_run"], summary["best_epoch"], summary["best_val_metric"], summary["steps"],
            summary["still_improving"]) == (3, 3, None, 6, False)
    best = torch.load(tmp_path / "run" / "checkpoint_best.pt", weights_only=True)
    assert best["epoch"] == 3 and best["val_metric"] is None
    last = _last_state(tmp_path)
    assert (last["epoch"], last["best_epoch"], last["bad_epochs"], last["finished"]) == (3, 3, 0, True)
    assert last["best_metric"] == -float("inf")
    assert "best val macro_auprc n/a (no validation score: the last epoch is kept) at epoch 3/3 in" in printed
    assert "still improving" not in printed


def _no_validation_split(samples):
    samples["split"] = samples["split"].replace("val", "test")


def _no_positive_in_validation(samples):
    samples.loc[samples["split"] == "val", "CHF"] = 0


@pytest.mark.parametrize(("edit", "last_line"), [
    (_no_validation_split, "WARNING: cohort cohort: no validation split: no epoch can be chosen on a validation "
                           "score, so training runs every epoch (no early stopping) and keeps the last one"),
    (_no_positive_in_validation, "WARNING: cohort cohort: the val split has no positive for 1 of 3 label(s) (CHF): "
                                 "AUROC and AUPRC are undefined for them there"),
], ids=["no-validation-split", "no-positive-in-validation"])
def test_warnings_are_flushed_before_the_first_training_step(tmp_path, edit, last_line):
    # a piped log (a DVC stage's, a batch job's) shows a warning at once, not hours later or never
    import contextlib
    import io
    from unittest import mock

    import pandas as pd

    import clinfuse.pipeline.trainer as trainer
    from tests.fixtures.cohorts import write_cohort

    cohort = write_cohort(tmp_path / "cohort", "mimic", n=12)
    samples = pd.read_parquet(cohort / "samples.parquet")
    edit(samples)
    samples.to_parquet(cohort / "samples.parquet")
    run = spec(cohort, "late_fusion", tmp_path / "run", epochs=1)
    run.settings.batch_size = 4

    class Stdout(io.StringIO):
        def flush(self):
            flushed.append(self.getvalue())

    flushed, at_first_step, stdout = [], [], Stdout()
    autocast = trainer.autocast

    def first_step_sees(*args, **kwargs):
        if not at_first_step:
            at_first_step.append(list(flushed))
        return autocast(*args, **kwargs)

    with mock.patch.object(trainer, "autocast", first_step_sees), contextlib.redirect_stdout(stdout):
        fit(run, track=False)
    assert at_first_step[0] and at_first_step[0][-1].rstrip().endswith(last_line)


def test_starting_afresh_removes_an_old_train_summary_so_an_unfinished_run_never_looks_finished(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "train_summary.json").write_text('{"best_epoch": 9}')  # an earlier, finished run's
    stopped, _, _, _ = _scripted_run(tmp_path, [0.3, 0.4], epochs=2, patience=5, stop_after_epoch=1)
    assert isinstance(stopped, StopTraining)
    assert not (tmp_path / "run" / "train_summary.json").exists()


def test_the_progress_bar_counts_the_steps_of_an_epoch_a_short_last_batch_included(tmp_path, monkeypatch):
    from rich.progress import Progress

    totals = []
    add_task = Progress.add_task
    monkeypatch.setattr(Progress, "add_task", lambda self, *a, **k: totals.append(k["total"]) or add_task(self, *a, **k))
    # 8 training rows in batches of 3: 3 steps per epoch, the last one of 2 rows
    summary, _, _, _ = _scripted_run(tmp_path, [0.3, 0.4], epochs=2, patience=5, batch_size=3)
    assert summary["steps"] == 2 * 3 and totals == [3, 3]


def test_a_non_finite_loss_seen_at_a_logging_step_stops_the_run_naming_its_epoch_and_step(tmp_path, monkeypatch):
    # 2 steps per epoch, every step logged: the NaN of global step 3 is caught at once, as epoch 2's step 1
    from clinfuse.models.methods.late_fusion import LateFusion
    from clinfuse.pipeline.trainer import TrainingDiverged

    real_step, calls = LateFusion.step, []

    def step(self, batch):
        calls.append(1)
        metrics = real_step(self, batch)
        if len(calls) == 3:
            metrics["loss_total"] = torch.tensor(float("nan"))
        return metrics

    monkeypatch.setattr(LateFusion, "step", step)
    with pytest.raises(TrainingDiverged, match=r"^diverged at epoch 2, step 1 \(global step 3\)"):
        _scripted_run(tmp_path, [0.3, 0.4, 0.5], epochs=3, patience=5)
    assert len(calls) == 3  # stopped right there, not at the end of the epoch


def test_a_checkpoint_holds_exactly_the_training_state_resume_needs(tmp_path):
    _scripted_run(tmp_path, [0.3, 0.4], epochs=2, patience=5)
    assert set(_last_state(tmp_path)) == {"epoch", "global_step", "best_metric", "best_epoch", "bad_epochs",
                                          "history", "mlflow_run_id", "finished"}


def test_a_tie_is_no_improvement_so_the_earlier_epoch_stays_and_patience_runs_out(tmp_path):
    # 0.5, 0.5, 0.5 with patience 2: epoch 1 is best; epochs 2 and 3 tie it, count as bad and stop the run
    summary, _, _, printed = _scripted_run(tmp_path, [0.5, 0.5, 0.5, 0.9], epochs=4, patience=2)
    assert (summary["best_epoch"], summary["epochs_run"], summary["best_val_metric"]) == (1, 3, 0.5)
    assert torch.load(tmp_path / "run" / "checkpoint_best.pt", weights_only=True)["epoch"] == 1
    assert "best val macro_auprc 0.500 at epoch 1/3 in" in printed


def test_a_run_whose_last_epoch_scores_best_is_still_improving_and_says_so(tmp_path):
    summary, _, _, printed = _scripted_run(tmp_path, [0.3, 0.4], epochs=2, patience=5)
    assert (summary["best_epoch"], summary["epochs_run"], summary["still_improving"]) == (2, 2, True)
    assert "best val macro_auprc 0.400 at epoch 2/2 (still improving at its last epoch: raise train.epochs) in" \
        in printed
    assert _last_state(tmp_path)["finished"] is True  # at its last epoch: finished, whatever its patience


def test_stop_after_epoch_stops_right_after_that_epoch_s_checkpoint(tmp_path):
    stopped, history, recorder, _ = _scripted_run(tmp_path, [0.3, 0.4, 0.5, 0.6], epochs=4, patience=5,
                                                  stop_after_epoch=2)
    assert isinstance(stopped, StopTraining) and str(stopped) == "stopped after epoch 2"
    assert history is None and not (tmp_path / "run" / "train_summary.json").exists()
    last = _last_state(tmp_path)
    assert (last["epoch"], last["global_step"], last["finished"]) == (2, 4, False)
    assert recorder.ended == ["KILLED"]


def test_resuming_a_run_that_stopped_early_trains_no_further_epoch(tmp_path):
    # patience 1: 0.5 then 0.4 stops after epoch 2 of 6; --resume must not train epochs 3..6
    summary, _, _, _ = _scripted_run(tmp_path, [0.5, 0.4], epochs=6, patience=1)
    assert summary["epochs_run"] == 2 and _last_state(tmp_path)["finished"] is True
    from unittest import mock

    import clinfuse.pipeline.trainer as trainer

    run = spec(tmp_path / "cohort", "late_fusion", tmp_path / "run", epochs=6)
    run.settings.batch_size, run.settings.patience, run.settings.log_every = 4, 1, 1
    with mock.patch.object(trainer, "evaluate_split", lambda *a, **k: pytest.fail("a finished run trained again")):
        again = fit(run, resume=True, track=False)
    assert (again["epochs_run"], again["steps"], again["best_epoch"]) == (2, 4, 1)
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())) == 2


def test_an_epoch_s_training_loss_is_the_mean_of_its_steps(tmp_path):
    _, history, recorder, _ = _scripted_run(tmp_path, [0.3, 0.4], epochs=2, patience=5)
    steps = [values["step/loss_total"] for _, values in recorder.logged if "step/loss_total" in values]
    assert len(steps) == 4  # 2 steps per epoch, each logged
    assert [r["train_loss_total"] for r in history] == pytest.approx([sum(steps[:2]) / 2, sum(steps[2:]) / 2],
                                                                     rel=1e-6)


@pytest.mark.parametrize(("optimizer", "expected"), [("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)])
def test_a_run_s_model_has_its_method_s_options_the_optimizer_it_names_and_plain_batchnorm_on_one_process(
        tmp_path, optimizer, expected):
    from clinfuse.models.sync_batchnorm import SumSyncBatchNorm
    from clinfuse.pipeline.trainer import build_for_cohort
    from tests.fixtures.cohorts import write_cohort

    cohort = load_cohort(write_cohort(tmp_path / "cohort", "mimic", n=12))
    run = spec(cohort.path, "igm", tmp_path / "run")
    run.method.options["feature_dim"] = 12  # a build option: each 8-wide encoder gets a projection to 12
    run.settings.optimizer, run.settings.lr, run.settings.weight_decay = optimizer, 0.003, 0.02  # not a default
    run.settings.sync_batchnorm = True  # asks for synchronised BatchNorm, which one process does not need
    model, opt, _, _ = build_for_cohort(run, cohort, torch.device("cpu"))
    assert {m: e.out_dim for m, e in model.encoders.items()} == {"ehr": 12, "cxr": 12}
    assert type(opt) is expected and opt.param_groups[0]["lr"] == 0.003 and opt.param_groups[0]["weight_decay"] == 0.02
    assert optimizer == "adamw" or opt.param_groups[0]["momentum"] == run.settings.momentum
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and not any(isinstance(m, SumSyncBatchNorm) for m in norms)


def test_the_tracker_logs_the_run_s_lineage_with_the_project_root_whose_dvc_lock_names_the_cohort(
        tmp_path, monkeypatch):
    from types import SimpleNamespace

    import clinfuse.pipeline.lineage as lineage
    from clinfuse.pipeline.tracking import NOTE_TAG

    tracker, _ = _fake_mlflow_tracker({})
    tags, logged = [], []
    tracker.mlflow = SimpleNamespace(set_tags=tags.append)
    monkeypatch.setenv("CLINFUSE_REPO_ROOT", str(tmp_path))
    monkeypatch.setattr(lineage, "log_split_inputs", lambda cohort, splits, root: logged.append((cohort, splits, root)))
    tracker.lineage("the cohort", {"train": [0, 1]}, "late_fusion on c, seed 3")
    assert logged == [("the cohort", {"train": [0, 1]}, tmp_path.resolve())]
    assert tags[0][NOTE_TAG] == "late_fusion on c, seed 3"
    tracker.enabled = False
    tracker.lineage("the cohort", {"train": [0, 1]}, "again")
    assert len(logged) == 1 and len(tags) == 1


def test_a_resumed_run_continues_the_python_numpy_torch_and_cuda_random_streams(tmp_path):
    import random
    from unittest import mock

    import numpy as np

    from clinfuse.pipeline.trainer import _rng_states, _set_rng_states

    def draws():
        return random.random(), float(np.random.standard_normal()), float(torch.rand(()))

    from clinfuse.pipeline.checkpoints import load_checkpoint, save_checkpoint

    np.random.seed(1)
    np.random.standard_normal()  # leaves numpy's second gaussian cached: part of the state
    save_checkpoint({"rng": _rng_states(torch.device("cpu"))}, tmp_path / "checkpoint_last.pt")
    saved = load_checkpoint(tmp_path / "checkpoint_last.pt")["rng"]  # as resume reads it
    expected = draws()
    draws()
    _set_rng_states(saved)
    assert draws() == expected and saved["cuda"] is None
    restored = []
    with mock.patch.object(torch.cuda, "get_rng_state_all", lambda: ["gpu0"]), \
            mock.patch.object(torch.cuda, "set_rng_state_all", restored.append), \
            mock.patch.object(torch.cuda, "is_available", lambda: True):
        on_gpu = _rng_states(torch.device("cuda", 0))
        assert on_gpu["cuda"] == ["gpu0"] and _rng_states(torch.device("cpu"))["cuda"] is None
        _set_rng_states(saved)  # a CPU run's checkpoint sets no CUDA stream
        _set_rng_states(on_gpu)
    assert restored == [["gpu0"]]


def test_the_tracker_logs_artifacts_tags_and_the_end_status_only_when_enabled(tmp_path):
    from types import SimpleNamespace

    tracker, _ = _fake_mlflow_tracker({})
    calls = []
    tracker.mlflow = SimpleNamespace(log_artifact=lambda path, artifact_path=None: calls.append((path, artifact_path)),
                                     set_tags=lambda tags: calls.append(tags),
                                     end_run=lambda status=None: calls.append(status))
    tracker.artifact(tmp_path / "checkpoint_best.pt", "checkpoint")
    tracker.artifact(tmp_path / "config.yaml")
    tracker.tags({"seed": "3"})
    tracker.end()
    tracker.end("KILLED")
    tracker.enabled = False
    tracker.artifact(tmp_path / "history.json")
    tracker.tags({"seed": "4"})
    tracker.end()
    assert calls == [(str(tmp_path / "checkpoint_best.pt"), "checkpoint"), (str(tmp_path / "config.yaml"), None),
                     {"seed": "3"}, "FINISHED", "KILLED"]


def _tracker_with_a_fake_store(histories, run_id=None, params=None):
    """A real _Tracker over a stand-in MLflow whose run already holds `histories` (metric -> steps logged)."""
    import sys
    from types import SimpleNamespace
    from unittest import mock

    import clinfuse.pipeline.tracking as tracking
    from clinfuse.pipeline.trainer import _Tracker

    calls = []

    def start_run(**kwargs):
        calls.append(("start_run", kwargs))
        return SimpleNamespace(info=SimpleNamespace(run_id=kwargs.get("run_id") or "new-run"),
                               data=SimpleNamespace(metrics=dict.fromkeys(histories, 0.0)))

    client = SimpleNamespace(get_metric_history=lambda rid, key: [SimpleNamespace(step=s) for s in histories[key]]
                             if rid == run_id else [])
    fake = SimpleNamespace(start_run=start_run, MlflowClient=lambda: client,
                           log_params=lambda p: calls.append(("log_params", p)))
    with mock.patch.dict(sys.modules, {"mlflow": fake}), \
            mock.patch.object(tracking, "setup_mlflow", lambda name: calls.append(("experiment", name)) or "exp-1"), \
            mock.patch.object(tracking, "with_retries", lambda write: write()):
        tracker = _Tracker(True, "clinfuse/mimic", "masam-s3", run_id, params or {})
    return tracker, calls


def test_a_resumed_mlflow_run_knows_the_last_step_logged_per_metric_prefix():
    tracker, calls = _tracker_with_a_fake_store(
        {"step/loss_total": [1, 12], "step/aps_ehr": [5], "align/gamma_ehr": [3, 9], "val_macro_auprc": [1, 2, 3],
         "lr": [1, 2], "epoch/weight": []}, run_id="old-run")
    assert tracker.logged_upto == {"step/": 12, "align/": 9, "": 3}
    assert tracker.run_id == "old-run" and tracker.enabled
    assert calls == [("experiment", "clinfuse/mimic"), ("start_run", {"run_id": "old-run"})]  # no params again
    logged = []
    tracker.mlflow.log_metrics = lambda values, step=None: logged.append((step, values))
    tracker.metrics({"step/loss_total": 0.1, "align/gamma_ehr": 0.2, "val_macro_auprc": 0.3}, 10)
    assert logged == [(10, {"align/gamma_ehr": 0.2, "val_macro_auprc": 0.3})]
    at_zero, _ = _tracker_with_a_fake_store({"step/loss_total": [0]}, run_id="old-run")
    assert at_zero.logged_upto == {"step/": 0}  # step 1 is still to be logged


def test_a_new_mlflow_run_is_named_in_its_experiment_and_records_the_flattened_configuration():
    tracker, calls = _tracker_with_a_fake_store({}, params={"method": {"options": {"rho": 0.3}}, "seed": 3})
    assert tracker.run_id == "new-run" and tracker.logged_upto == {}
    assert calls == [("experiment", "clinfuse/mimic"), ("start_run", {"experiment_id": "exp-1", "run_name": "masam-s3"}),
                     ("log_params", {"method.options.rho": "0.3", "seed": "3"})]


def test_a_disabled_tracker_keeps_the_run_id_it_was_given_and_talks_to_no_store():
    from clinfuse.pipeline.trainer import _Tracker

    tracker = _Tracker(False, "clinfuse/mimic", "masam-s3", "old-run", {})
    assert (tracker.enabled, tracker.run_id, tracker.logged_upto) == (False, "old-run", {})
    assert not hasattr(tracker, "mlflow")
    tracker.metrics({"val_macro_auprc": 0.3}, 1)  # a no-op, not an error

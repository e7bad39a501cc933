"""`clinfuse tune` in one process: budgets, selection on validation, never the test split, MLflow nesting."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from clinfuse.pipeline import data as data_module
from clinfuse.pipeline import trainer as trainer_module
from clinfuse.pipeline.commands.train import tuned_method
from clinfuse.pipeline.commands.tune import build_study
from clinfuse.pipeline.config import load_params
from clinfuse.pipeline.settings.train import TrainSettings
from clinfuse.pipeline.stages.tune import finish, is_surplus, select, work, write_untuned
from tests.tuning.conftest import tune_args, write_params


def _trial(number, state, **attrs):
    from optuna.trial import TrialState

    return SimpleNamespace(number=number, state=getattr(TrialState, state), user_attrs=attrs)


def test_a_trial_asked_after_the_budget_was_handed_out_is_a_surplus():
    # budget 2: trials 0 and 1 hold the slots; 2 (asked at the same time by another worker) is surplus
    trials = [_trial(0, "COMPLETE"), _trial(1, "RUNNING"), _trial(2, "RUNNING")]
    assert not is_surplus(trials, 1, 2)
    assert is_surplus(trials, 2, 2)


def test_a_killed_trial_gives_its_slot_to_its_retry():
    # trial 1's worker died (failed without an error); its retry 3 waits; 4 is the surplus, not 3
    trials = [_trial(0, "COMPLETE"), _trial(1, "FAIL"), _trial(2, "COMPLETE"), _trial(3, "RUNNING"),
              _trial(4, "RUNNING")]
    assert not is_surplus(trials, 3, 3)
    assert is_surplus(trials, 4, 3)


def test_a_trial_that_failed_with_an_error_counts_towards_the_budget():
    trials = [_trial(0, "FAIL", error="diverged"), _trial(1, "RUNNING")]
    assert is_surplus(trials, 1, 1)


def test_selection_takes_the_best_complete_trial_and_the_earliest_on_a_tie():
    records = [{"number": 0, "state": "COMPLETE", "value": 0.5}, {"number": 1, "state": "PRUNED", "value": None},
               {"number": 2, "state": "COMPLETE", "value": 0.7}, {"number": 3, "state": "COMPLETE", "value": 0.7}]
    assert select(records)["number"] == 2


def test_budget_zero_writes_the_method_config_as_it_is_and_runs_no_trial(tiny_cohort, tmp_path):
    params = write_params(tmp_path, budget=0)
    study = build_study(tune_args(tiny_cohort, "masam_no_aps", params), load_params(params))
    write_untuned(study)
    selected = yaml.safe_load((study.folder / "selected.yaml").read_text())
    assert selected["method"] == "masam" and selected["options"] == {"aps": False} and selected["train"] == {}
    assert not (study.folder / "study").exists()
    settings = TrainSettings()
    assert tuned_method(study.folder / "selected.yaml", "masam_no_aps", settings).options == {"aps": False}
    assert settings == TrainSettings()  # nothing tuned, nothing changed


def test_train_applies_the_tuned_options_and_learning_rate(tmp_path):
    path = tmp_path / "selected.yaml"
    path.write_text("method: masam\noptions: {rho: 0.7}\ntrain: {lr: 0.0005}\n")
    settings = TrainSettings()
    assert tuned_method(path, "masam", settings).options == {"rho": 0.7}
    assert settings.lr == 0.0005


def test_train_refuses_a_selection_tuned_for_another_method(tmp_path):
    from clinfuse.etl.errors import ConfigError

    path = tmp_path / "selected.yaml"
    path.write_text("method: sam\noptions: {rho: 0.7}\n")
    with pytest.raises(ConfigError, match="selected.yaml: method: 'sam' was tuned, but --method masam trains 'masam'"):
        tuned_method(path, "masam", TrainSettings())


class RowsGuard:
    """A cohort array whose test rows fail the test when read (what the trial path must never do)."""

    def __init__(self, array: np.ndarray, test_rows: np.ndarray):
        self.array, self.test_rows = array, set(test_rows.tolist())
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index):
        rows = np.arange(len(self.array))[index[0] if isinstance(index, tuple) else index]
        touched = self.test_rows.intersection(np.atleast_1d(rows).tolist())
        if touched:
            raise AssertionError(f"tuning read test rows {sorted(touched)[:5]}")
        return self.array[index]


def test_tuning_never_reads_a_test_row_nor_evaluates_on_test(tiny_cohort, tmp_path, monkeypatch):
    load = data_module.load_cohort

    def guarded_load(path):
        cohort = load(path)
        test = cohort.rows("test")
        assert len(test) > 0
        cohort.arrays = {m: RowsGuard(a, test) for m, a in cohort.arrays.items()}
        labels = cohort.labels

        def guarded_labels(rows=None):
            assert rows is not None and not set(np.asarray(rows).tolist()) & set(test.tolist()), "test labels read"
            return labels(rows)

        cohort.labels = guarded_labels
        return cohort

    evaluated = []

    def spy_split_tensors(cohort, split, device="cpu"):
        assert split != "test", "the trial path asked for the test split"
        evaluated.append(split)
        return split_tensors(cohort, split, device)

    split_tensors = trainer_module.split_tensors
    monkeypatch.setattr(trainer_module, "load_cohort", guarded_load)
    monkeypatch.setattr(trainer_module, "split_tensors", spy_split_tensors)
    params = write_params(tmp_path, budget=2)
    study = build_study(tune_args(tiny_cohort, "sam", params), load_params(params))
    optuna_study, ran = work(study, track=False)
    line = finish(study, optuna_study, track=False)
    assert ran == 2 and sorted(set(evaluated)) == ["train", "val"]
    assert "selected trial" in line


def test_every_trial_is_an_mlflow_run_nested_under_the_study_with_its_configuration_and_score(
        tiny_cohort, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = write_params(tmp_path, budget=2)
    study = build_study(tune_args(tiny_cohort, "sam", params, no_tracking=False), load_params(params))
    optuna_study, _ = work(study, track=True)
    finish(study, optuna_study, track=True)
    record = yaml.safe_load((study.folder / "selected.yaml").read_text())
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("clinfuse/mimic-phenotype")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.info.run_name == "tune-sam"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.metrics["best_val_macro_auprc"] == pytest.approx(record["tuning"]["value"])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2
    by_trial = {t.number: t for t in optuna_study.get_trials()}
    for child in children:
        trial = by_trial[int(child.data.tags["tune.trial"])]
        assert float(child.data.params["method.options.rho"]) == trial.params["rho"]
        assert float(child.data.params["train.lr"]) == trial.params["train.lr"]
        assert child.data.metrics["best_val_macro_auprc"] == pytest.approx(trial.value)
        contexts = {i.tags[0].value for i in child.inputs.dataset_inputs} if child.inputs else set()
        assert "test" not in contexts


def test_the_study_name_ignores_where_trials_run_but_not_what_they_compute(tiny_cohort, tmp_path):
    params = write_params(tmp_path, budget=2)
    study = build_study(tune_args(tiny_cohort, "sam", params), load_params(params))
    name = study.name()
    study.train = study.train.model_copy(update={"device": "cuda", "num_threads": 8})
    assert study.name() == name  # a GPU worker joins the CPU worker's study
    study.train = study.train.model_copy(update={"weight_decay": 0.1})
    assert study.name() != name
    study.settings.budget = 50
    study.train = study.train.model_copy(update={"weight_decay": 0.0})
    assert study.name() == name  # a raised budget continues the same study


def test_a_grid_smaller_than_the_budget_is_visited_once_whole(tiny_cohort, tmp_path):
    params = write_params(tmp_path, budget=1000)
    study = build_study(tune_args(tiny_cohort, "sam", params), load_params(params))
    assert study.target == study.space.grid_size() == 24


def test_a_range_under_the_grid_sampler_fails_naming_the_key(tiny_cohort, tmp_path):
    from clinfuse.etl.errors import ConfigError
    from clinfuse.pipeline.stages.tune import make_sampler

    params = write_params(tmp_path, budget=2)
    space = tmp_path / "space.yaml"
    space.write_text("method: sam\nsources: [x]\nspace:\n  rho: {low: 0.01, high: 0.5, log: true}\n")
    study = build_study(tune_args(tiny_cohort, "sam", params, search=str(space)), load_params(params))
    with pytest.raises(ConfigError, match=r"space.rho: a range cannot be visited by a grid"):
        make_sampler(study)
    study.settings.sampler = "tpe"
    assert make_sampler(study) is not None


def test_an_unknown_option_in_the_search_space_fails_before_any_trial(tiny_cohort, tmp_path):
    from clinfuse.etl.errors import ConfigError

    params = write_params(tmp_path, budget=2)
    space = tmp_path / "space.yaml"
    space.write_text("method: sam\nsources: [x]\nspace:\n  radius: [0.1]\n")
    with pytest.raises(ConfigError, match=r"space.yaml: space.radius: unknown option for method 'sam'"):
        build_study(tune_args(tiny_cohort, "sam", params, search=str(space)), load_params(params))


def test_the_median_pruner_stops_a_trial_below_the_median_and_it_counts_but_is_never_selected(
        tiny_cohort, tmp_path, monkeypatch):
    # a stand-in for the trainer: trial k reports its scores per epoch through the trial hook
    scores = {0: [0.8, 0.9], 1: [0.7, 0.8], 2: [0.1, 0.2], 3: [0.6, 0.95]}
    calls = []

    def fake_fit(spec, resume, track, trial):
        k = int(trial.tags["tune.trial"])
        calls.append(k)
        for epoch, score in enumerate(scores[k], start=1):
            trial.on_epoch(epoch, score)
        return {"mlflow_run_id": None, "best_epoch": 2, "seconds": 0.0, "best_val_metric": max(scores[k])}

    monkeypatch.setattr(trainer_module, "fit", fake_fit)
    params = write_params(tmp_path, budget=4, pruner="median")
    study = build_study(tune_args(tiny_cohort, "sam", params), load_params(params))
    optuna_study, ran = work(study, track=False)
    finish(study, optuna_study, track=False)
    states = {t.number: t.state.name for t in optuna_study.get_trials()}
    assert states == {0: "COMPLETE", 1: "COMPLETE", 2: "PRUNED", 3: "COMPLETE"}
    selected = yaml.safe_load((study.folder / "selected.yaml").read_text())["tuning"]
    assert (selected["trials"], selected["pruned"], selected["trial"], selected["value"]) == (4, 1, 3, 0.95)

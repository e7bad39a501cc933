"""Tune one method config on one cohort: an Optuna study whose trials are training runs on the
train split, scored on the validation split's headline metric; the best trial's configuration is
written for `clinfuse train --tuned` (docs/tuning.md).

Layout (`<tuning>/<cohort>/<method>/`):
  selected.yaml   the method config with the selected options and training settings (train reads it)
  study.json      the search space, budget, every trial (parameters, state, validation score per epoch)
                  and the selection: what the report shows
  study/          the Optuna storage (SQLite by default) and one run folder per trial (trials/t0007/:
                  config, history and summary; its checkpoints are removed once the trial ends)

Budget. Every method gets `tune.budget` trials (a grid smaller than the budget caps it: each point
once). A trial counts once it ends: complete, pruned, or failed with an error (a diverged run).
A trial whose worker died (no heartbeat for `tune.grace_seconds`) is marked failed by the next
worker that looks, and Optuna's RetryHeartbeatStaleTrialCallback queues it again with the same parameters
(it resumes from its last checkpoint when its folder is on this machine); it does not count.

Workers. Any number of `clinfuse tune` processes (this machine, other machines, SLURM array jobs)
join one study through a shared RDB storage (`tune.storage`: a SQLite file on one machine, a
PostgreSQL/MySQL URL across machines). Before training, a worker checks that its trial is within
the budget: trials are numbered atomically by the storage, and a trial whose number comes after
`budget` trials already ended, running or queued is a surplus (two workers asked at once): it is
marked failed without training and never counts. So a study ends with exactly `budget` counted
trials, none trained twice.

Never test. A trial reads the train and validation splits only (the trainer's `fit` with a
`TrialHooks`); nothing here opens the test split or the evaluation stage's code.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from clinfuse.etl.atomic import write_json, write_text
from clinfuse.etl.errors import ClinfuseError, ConfigError

from ..settings.methods import MethodConfig
from ..settings.search import Range, SearchSpace, SelectedConfig, split_params
from ..settings.train import TrainSettings
from ..settings.tune import TuneSettings

PARENT_RUN_ATTR = "mlflow_parent_run_id"
WHERE_IT_RUNS = ("device", "num_threads", "eval_batch_size", "log_every", "nproc")  # train keys outside the study name


@dataclass
class Study:
    """One (cohort, method config) study: what it tunes and with which settings."""

    cohort_dir: Path
    cohort_name: str
    task_type: str | None  # None with budget 0 (the cohort is not loaded)
    method_name: str  # config name (configs/methods/<name>.yaml)
    method: MethodConfig
    space: SearchSpace
    space_file: str
    settings: TuneSettings
    train: TrainSettings  # params.yaml `train:` (epochs replaced by tune.epochs)
    preset: str
    encoders: dict[str, dict[str, Any]]
    seed: int  # every trial's seed (the sweep's first)
    folder: Path  # <tuning>/<cohort>/<method>

    @property
    def metric(self) -> str | None:
        if self.task_type is None:
            return None
        from clinfuse.evaluation.metrics import headline_metric

        return f"val_{headline_metric(self.task_type)}"

    @property
    def target(self) -> int:
        """Trials the study runs: the budget, or the grid's size when the grid is smaller."""
        size = self.space.grid_size() if self.settings.sampler == "grid" else None
        return self.settings.budget if size is None else min(self.settings.budget, size)

    def storage_url(self) -> str:
        if self.settings.storage:
            return self.settings.storage
        return f"sqlite:///{(self.folder / 'study' / 'study.db').resolve()}"

    def name(self) -> str:
        """`<cohort>-<method>-<fingerprint>`: a changed space, sampler, cohort or training setting is a new
        study (its old trials answer another question); a raised budget continues the same one."""
        manifest = (self.cohort_dir / "manifest.json").read_bytes()
        key = json.dumps({
            "cohort": hashlib.sha256(manifest).hexdigest(), "method": self.method.model_dump(mode="json"),
            "space": self.space.fingerprint(), "sampler": self.settings.sampler, "pruner": self.settings.pruner,
            "seed": self.settings.seed, "preset": self.preset,
            # where and how fast a trial runs is not part of the question (workers may differ in it)
            "train": {k: v for k, v in self.train.model_dump(mode="json").items() if k not in WHERE_IT_RUNS},
            "trial_seed": self.seed,
        }, sort_keys=True, default=str)
        return f"{self.cohort_name}-{self.method_name}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


class Surplus(Exception):
    """A trial asked for after the budget was already handed out (two workers asked at once)."""


class TrialError(Exception):
    """A trial's run failed (diverged, an option out of range): it ends failed and counts."""


def _pruned_class():
    from ..trainer import StopTraining

    class Pruned(StopTraining):
        """The pruner stopped the trial (its MLflow run ends KILLED)."""

    return Pruned


# --- Optuna objects ----------------------------------------------------------------------------


def open_storage(study: Study):
    """The shared RDB storage with heartbeats, and a retry for a trial whose worker died."""
    import optuna

    url = study.storage_url()
    engine: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        engine = {"connect_args": {"timeout": 60}}  # several workers: wait for the file lock, do not fail
    s = study.settings
    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine, heartbeat_interval=s.heartbeat_seconds, grace_period=s.grace_seconds,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=s.max_retries))
        except Exception as exc:  # a malformed URL, a missing database driver
            # ... or two workers creating a fresh database's tables (and version row) at the same moment:
            # the second sees "table already exists" or a UNIQUE constraint; a moment later all is there
            from sqlalchemy.exc import SQLAlchemyError

            if attempt < 2 and isinstance(exc, SQLAlchemyError):
                time.sleep(1.0)
                continue
            raise ConfigError(f"tune.storage: cannot open {url!r}: {str(exc).splitlines()[0]}") from None


def make_sampler(study: Study):
    import optuna

    if study.settings.sampler == "grid":
        grid = {k: v for k, v in study.space.space.items() if not isinstance(v, Range)}
        if len(grid) != len(study.space.space):
            ranges = sorted(set(study.space.space) - set(grid))
            raise ConfigError(f"{study.space_file}: space.{ranges[0]}: a range cannot be visited by a grid; "
                              "list values, or set tune.sampler: tpe")
        return optuna.samplers.GridSampler(grid, seed=study.settings.seed)
    # constant_liar: a worker treats the others' running trials as bad, so parallel workers spread out
    return optuna.samplers.TPESampler(seed=study.settings.seed, constant_liar=True)


def make_pruner(study: Study):
    import optuna

    if study.settings.pruner == "median":
        # epochs count from 1: the first epoch is never pruned
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)
    return optuna.pruners.NopPruner()


def suggest(trial, space: SearchSpace) -> dict[str, Any]:
    """The trial's values for every name of the space."""
    params = {}
    for key, values in space.space.items():
        if isinstance(values, Range):
            params[key] = trial.suggest_float(key, values.low, values.high, log=values.log)
        else:
            params[key] = trial.suggest_categorical(key, values)
    return params


def counts(trials) -> dict[str, int]:
    """ended (counted: complete, pruned, failed with an error), running, waiting (queued retries)."""
    from optuna.trial import TrialState

    out = {"ended": 0, "running": 0, "waiting": 0}
    for t in trials:
        if _counted_end(t):
            out["ended"] += 1
        elif t.state == TrialState.RUNNING:
            out["running"] += 1
        elif t.state == TrialState.WAITING:
            out["waiting"] += 1
    return out


def _counted_end(t) -> bool:
    from optuna.trial import TrialState

    return t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        t.state == TrialState.FAIL and "error" in t.user_attrs)


def _holds_slot(t) -> bool:
    from optuna.trial import TrialState

    return _counted_end(t) or t.state in (TrialState.RUNNING, TrialState.WAITING)


def is_surplus(trials, number: int, target: int) -> bool:
    """Whether trial `number` comes after `target` trials that ended, run or wait (numbers are atomic)."""
    ahead = sum(1 for t in trials if t.number < number and _holds_slot(t))
    return ahead >= target


# --- one worker --------------------------------------------------------------------------------


def create_or_load(study: Study, storage, track: bool):
    """The study, created once: the process that creates it also opens the MLflow parent run."""
    import optuna

    name = study.name()
    try:
        created = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                      sampler=make_sampler(study), pruner=make_pruner(study), load_if_exists=False)
        created.set_user_attr("cohort", study.cohort_name)
        created.set_user_attr("method", study.method_name)
        created.set_user_attr("metric", study.metric)
        if track:
            created.set_user_attr(PARENT_RUN_ATTR, _start_parent_run(study, name))
        return created
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(study),
                                 pruner=make_pruner(study))


def _start_parent_run(study: Study, name: str) -> str:
    import mlflow

    from ..tracking import flatten, setup_mlflow, with_retries

    experiment_id = setup_mlflow(f"clinfuse/{study.cohort_name}")
    client = mlflow.MlflowClient()
    run = with_retries(lambda: client.create_run(experiment_id, run_name=f"tune-{study.method_name}", tags={
        "cohort": study.cohort_name, "method": study.method_name, "tune.study": name,
        "mlflow.note.content": f"tuning study of {study.method_name} on {study.cohort_name}: "
                               f"{study.target} trials, {study.settings.sampler}, selected on {study.metric}"}))
    params = {"tune.budget": study.settings.budget, "tune.sampler": study.settings.sampler,
              "tune.pruner": study.settings.pruner, "tune.space_file": study.space_file,
              **flatten({"space": {k: v if isinstance(v, list) else v.model_dump()
                                   for k, v in study.space.space.items()}})}
    with_retries(lambda: client.log_batch(run.info.run_id, params=[
        mlflow.entities.Param(k, str(v)) for k, v in params.items()]))
    return run.info.run_id


def _parent_run_id(optuna_study, storage, track: bool) -> str | None:
    import optuna

    if not track:
        return None
    for _ in range(60):  # the creator sets it right after creating the study
        parent = optuna_study.user_attrs.get(PARENT_RUN_ATTR)
        if parent:
            return parent
        time.sleep(0.5)
        optuna_study = optuna.load_study(study_name=optuna_study.study_name, storage=storage)
    raise ClinfuseError(f"study {optuna_study.study_name}: no MLflow parent run recorded (was it created "
                        "with --no-tracking? start every worker alike)")


def make_objective(study: Study, track: bool, parent_run_id: str | None, worker: str):
    """The trial: a training run of the suggested configuration, scored by its best validation epoch."""
    import optuna

    from ..trainer import RunSpec, TrialHooks, fit

    pruned = _pruned_class()

    def objective(trial) -> float:
        trial.set_user_attr("worker", worker)
        trials = trial.study.get_trials(deepcopy=False)
        if is_surplus(trials, trial.number, study.target):
            trial.set_user_attr("surplus", True)
            raise Surplus(f"trial {trial.number}: the budget of {study.target} trials was handed out")
        params = suggest(trial, study.space)
        options, train = split_params(params)
        frozen = next(t for t in trials if t.number == trial.number)
        original = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
        folder = study.folder / "study" / "trials" / f"t{trial.number if original is None else original:04d}"
        try:
            settings = TrainSettings.model_validate({**study.train.model_dump(), **train})
        except Exception as exc:
            trial.set_user_attr("error", str(exc).splitlines()[0])
            raise TrialError(str(exc)) from None
        method = MethodConfig(method=study.method.method, options={**study.method.options, **options})
        spec = RunSpec(study.cohort_dir, study.method_name, method, study.preset, study.encoders, settings,
                       study.seed, folder)

        def on_epoch(epoch: int, score: float | None) -> None:
            if score is None:
                return
            trial.report(score, epoch)
            if trial.should_prune():
                raise pruned(f"pruned after epoch {epoch} ({study.metric} {score:.4f})")

        tags = {"tune.study": trial.study.study_name, "tune.trial": str(trial.number)}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        try:
            summary = fit(spec, resume="auto", track=track, trial=TrialHooks(tags, on_epoch))
        except pruned as exc:
            trial.set_user_attr("pruned", str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        except ClinfuseError as exc:  # diverged, an option out of range: this configuration fails
            trial.set_user_attr("error", str(exc))
            raise TrialError(str(exc)) from None
        finally:
            for checkpoint in folder.glob("checkpoint_*.pt"):
                checkpoint.unlink()  # trials keep their history, not their weights (disk)
        trial.set_user_attr("mlflow_run_id", summary["mlflow_run_id"])
        trial.set_user_attr("best_epoch", summary["best_epoch"])
        trial.set_user_attr("seconds", summary["seconds"])
        if summary["best_val_metric"] is None:
            trial.set_user_attr("error", "no validation score (empty validation split?)")
            raise TrialError("no validation score")
        return float(summary["best_val_metric"])

    return objective


def work(study: Study, *, track: bool = True, wait: bool = True, poll_seconds: float = 2.0) -> tuple[Any, int]:
    """Join the study and run its trials until the budget is met; returns (the Optuna study, trials
    this worker ran). With `wait`, stay until every trial has ended (a dead worker's trial is retried
    here once its heartbeat is stale); without, leave when nothing is left to start."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # heartbeats and retries are marked experimental since Optuna 2.8/2.9; their interface is what we use
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = open_storage(study)
    optuna_study = create_or_load(study, storage, track)
    parent = _parent_run_id(optuna_study, storage, track)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    objective = make_objective(study, track, parent, worker)
    ran = 0
    while True:
        optuna.storages.fail_stale_trials(optuna_study)  # a dead worker's trial: failed, then queued again
        n = counts(optuna_study.get_trials(deepcopy=False))
        if n["ended"] >= study.target:
            break
        if n["ended"] + n["running"] + n["waiting"] >= study.target and n["waiting"] == 0:
            if not wait:
                break
            time.sleep(poll_seconds)  # other workers are running the last trials
            continue
        optuna_study.optimize(objective, n_trials=1, catch=(Surplus, TrialError))
        last = optuna_study.get_trials(deepcopy=False)
        mine = [t for t in last if t.user_attrs.get("worker") == worker and not t.user_attrs.get("surplus")]
        ran = len(mine)
        if mine:
            t = mine[-1]
            value = "" if t.value is None else f" {study.metric} {t.value:.4f}"
            print(f"tune {study.cohort_name}/{study.method_name}: trial {t.number} {t.state.name.lower()}{value} "
                  f"({counts(last)['ended']}/{study.target})", flush=True)
    return optuna_study, ran


# --- selection and outputs ---------------------------------------------------------------------


def trial_records(optuna_study) -> list[dict[str, Any]]:
    """Every trial as plain data (what study.json and the report hold)."""
    out = []
    for t in optuna_study.get_trials(deepcopy=False):
        out.append({
            "number": t.number, "state": t.state.name, "params": dict(t.params), "value": t.value,
            "counted": _counted_end(t), "surplus": bool(t.user_attrs.get("surplus")),
            "retry_of": t.system_attrs.get("failed_trial"),
            "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
            "error": t.user_attrs.get("error"), "worker": t.user_attrs.get("worker"),
            "mlflow_run_id": t.user_attrs.get("mlflow_run_id"), "best_epoch": t.user_attrs.get("best_epoch"),
            "seconds": t.user_attrs.get("seconds"),
        })
    return out


def select(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The complete trial with the highest validation score; a tie goes to the earliest trial."""
    complete = [r for r in records if r["state"] == "COMPLETE" and r["value"] is not None]
    return max(complete, key=lambda r: (r["value"], -r["number"])) if complete else None


def selected_config(study: Study, best: dict[str, Any] | None, summary: dict[str, Any]) -> SelectedConfig:
    options, train = split_params(best["params"]) if best else ({}, {})
    return SelectedConfig(method=study.method.method, options={**study.method.options, **options}, train=train,
                          tuning=summary)


def write_untuned(study: Study) -> str:
    """budget 0: the method config as it is, and a study.json that says no trial ran."""
    summary = {"budget": 0, "trials": 0, "note": "tune.budget is 0: the method config as it is"}
    _write(study, selected_config(study, None, summary), {**_study_header(study), "trials": [], "selected": None})
    return f"tune {study.cohort_name}/{study.method_name}: budget 0, the config as it is -> {study.folder}"


def _study_header(study: Study) -> dict[str, Any]:
    return {
        "cohort": study.cohort_name, "method": study.method_name, "method_class": study.method.method,
        "metric": study.metric, "budget": study.settings.budget, "target": study.target,
        "grid_size": study.space.grid_size(), "sampler": study.settings.sampler, "pruner": study.settings.pruner,
        "space_file": study.space_file, "sources": study.space.sources,
        "space": {k: v if isinstance(v, list) else v.model_dump() for k, v in study.space.space.items()},
        "fixed_options": study.method.options, "trial_seed": study.seed, "trial_epochs": study.train.epochs,
    }


def _write(study: Study, selected: SelectedConfig, record: dict[str, Any]) -> None:
    study.folder.mkdir(parents=True, exist_ok=True)
    write_json(study.folder / "study.json", record)
    header = (f"# Selected by `clinfuse tune` on {study.cohort_name}'s validation split ({study.metric}); "
              "read by `clinfuse train --tuned`.\n" if study.settings.budget else
              "# tune.budget is 0: the method config as it is; read by `clinfuse train --tuned`.\n")
    write_text(study.folder / "selected.yaml",
               header + yaml.safe_dump(selected.model_dump(mode="json"), sort_keys=False))


def finish(study: Study, optuna_study, track: bool) -> str:
    """Select on validation, write selected.yaml and study.json, close the MLflow parent run."""
    records = trial_records(optuna_study)
    best = select(records)
    counted = [r for r in records if r["counted"]]
    states = {s: sum(1 for r in counted if r["state"] == s) for s in ("COMPLETE", "PRUNED", "FAIL")}
    summary = {"study": optuna_study.study_name, "budget": study.settings.budget, "trials": len(counted),
               "complete": states["COMPLETE"], "pruned": states["PRUNED"], "failed": states["FAIL"],
               "sampler": study.settings.sampler, "pruner": study.settings.pruner, "metric": study.metric,
               "value": best["value"] if best else None, "trial": best["number"] if best else None}
    if best is None:
        raise ClinfuseError(f"tune {study.cohort_name}/{study.method_name}: no trial completed "
                            f"({states['PRUNED']} pruned, {states['FAIL']} failed); see {study.folder / 'study'}")
    _write(study, selected_config(study, best, summary),
           {**_study_header(study), "study": optuna_study.study_name, "trials": records, "selected": best})
    parent = optuna_study.user_attrs.get(PARENT_RUN_ATTR)
    if track and parent:
        _close_parent_run(parent, study, best, summary)
    chosen = ", ".join(f"{k}={v}" for k, v in best["params"].items())
    return (f"tune {study.cohort_name}/{study.method_name}: {len(counted)} trials ({states['COMPLETE']} complete, "
            f"{states['PRUNED']} pruned, {states['FAIL']} failed); selected trial {best['number']} ({chosen}) "
            f"{study.metric} {best['value']:.4f} -> {study.folder / 'selected.yaml'}")


def _close_parent_run(run_id: str, study: Study, best: dict, summary: dict) -> None:
    import mlflow

    from ..tracking import with_retries

    client = mlflow.MlflowClient()
    # a raised budget continues the study: its parent run, finished before, takes the new selection
    metrics = [mlflow.entities.Metric(f"best_{study.metric}", best["value"], int(time.time() * 1000), 0),
               mlflow.entities.Metric("trials", summary["trials"], int(time.time() * 1000), 0)]
    tags = [mlflow.entities.RunTag(f"selected.{k}", str(v)) for k, v in best["params"].items()]
    with_retries(lambda: client.log_batch(run_id, metrics=metrics, tags=tags))
    with_retries(lambda: client.log_artifact(run_id, str(study.folder / "selected.yaml")))
    with_retries(lambda: client.log_artifact(run_id, str(study.folder / "study.json")))
    with_retries(lambda: client.set_terminated(run_id, "FINISHED"))

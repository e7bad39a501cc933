"""Several `clinfuse tune` processes on one study (real processes): the budget is met exactly, no trial is
trained twice or lost, and a worker killed with SIGKILL mid-trial leaves a study that resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna

from tests.tuning.conftest import write_params

ROOT = Path(__file__).resolve().parents[2]


# Runs `clinfuse tune` in a process that stops itself (SIGSTOP) right after its first `checkpoint_last.pt`
# is written: the test then kills it at exactly that point, mid-trial, however fast or slow the machine is.
# (Polling for the file raced with the trial's end, which deletes it: a fast machine finished first.)
_STOP_AFTER_FIRST_CHECKPOINT = """
import os, runpy, signal, sys
import clinfuse.pipeline.trainer as trainer
save = trainer.save_checkpoint
def save_then_stop(obj, path):
    save(obj, path)
    if path.name == trainer.CHECKPOINT_LAST:
        os.kill(os.getpid(), signal.SIGSTOP)
trainer.save_checkpoint = save_then_stop
sys.argv = ["clinfuse.pipeline", *sys.argv[1:]]
runpy.run_module("clinfuse.pipeline", run_name="__main__")
"""


def _start(folder: Path, cohort: Path, *extra: str, stop_after_first_checkpoint: bool = False) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
    entry = ["-c", _STOP_AFTER_FIRST_CHECKPOINT] if stop_after_first_checkpoint else ["-m", "clinfuse.pipeline"]
    return subprocess.Popen(
        [sys.executable, *entry, "--params", str(folder / "params.yaml"), "tune",
         "--cohort", str(cohort), "--method", "sam", "--no-tracking", *extra],
        cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_until_stopped(process: subprocess.Popen, timeout: float) -> None:
    """Block until `process` is stopped by a signal; fail with its output if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status = os.waitpid(process.pid, os.WUNTRACED | os.WNOHANG)
        if pid and os.WIFSTOPPED(status):
            return
        assert not pid, f"the first trial ended without checkpointing (status {status})"
        time.sleep(0.05)
    raise AssertionError("the first trial never checkpointed")


def _study(folder: Path) -> optuna.Study:
    storage = f"sqlite:///{folder / 'tuning' / 'mimic-phenotype' / 'sam' / 'study' / 'study.db'}"
    (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


def test_two_workers_sharing_a_study_finish_the_budget_with_no_trial_run_twice_and_none_lost(tiny_cohort, tmp_path):
    write_params(tmp_path, budget=4)
    main = _start(tmp_path, tiny_cohort)
    worker = _start(tmp_path, tiny_cohort, "--worker")
    out_main, _ = main.communicate(timeout=600)
    out_worker, _ = worker.communicate(timeout=600)
    assert main.returncode == 0, out_main[-3000:]
    assert worker.returncode == 0, out_worker[-3000:]
    trained = (out_main + out_worker).count("trained sam on mimic-phenotype")
    study = json.loads((tmp_path / "tuning" / "mimic-phenotype" / "sam" / "study.json").read_text())
    counted = [t for t in study["trials"] if t["counted"]]
    assert trained == 4  # every trial trained once, by one of the two processes
    assert len(counted) == 4 and all(t["state"] == "COMPLETE" for t in counted)
    assert len({json.dumps(t["params"], sort_keys=True) for t in counted}) == 4  # four distinct grid points
    assert all(not t["surplus"] for t in counted)
    assert not [t for t in study["trials"] if t["state"] in ("RUNNING", "WAITING")]
    print("trials per worker:", {w: sum(1 for t in counted if t["worker"] == w) for w in {t["worker"] for t in counted}})


def test_a_worker_killed_mid_trial_leaves_a_consistent_study_whose_trial_is_retried_and_which_resumes(
        tiny_cohort, tmp_path):
    write_params(tmp_path, budget=2, epochs=3)
    first = _start(tmp_path, tiny_cohort, stop_after_first_checkpoint=True)
    trials_dir = tmp_path / "tuning" / "mimic-phenotype" / "sam" / "study" / "trials"
    # kill it once its first trial has checkpointed an epoch (mid-trial: RUNNING in the storage)
    _wait_until_stopped(first, timeout=300)
    assert len(list(trials_dir.glob("t*/checkpoint_last.pt"))) == 1
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    killed = [t for t in _study(tmp_path).get_trials() if t.state == optuna.trial.TrialState.RUNNING]
    assert len(killed) == 1  # the study still says running: nobody has noticed yet

    second = _start(tmp_path, tiny_cohort)  # notices the stale heartbeat, retries the trial, finishes
    out, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out[-3000:]
    trials = _study(tmp_path).get_trials()
    by_number = {t.number: t for t in trials}
    dead = by_number[killed[0].number]
    assert dead.state == optuna.trial.TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retries) == 1 and retries[0].state == optuna.trial.TrialState.COMPLETE
    assert retries[0].params == dead.params  # the same configuration, not a new one
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 2
    assert not [t for t in trials if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)]
    # the retry continued the killed trial's run folder from its checkpoint
    assert f"t{dead.number:04d}: resuming from checkpoint_last.pt" in out, out[-3000:]
    history = json.loads((trials_dir / f"t{dead.number:04d}" / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3]

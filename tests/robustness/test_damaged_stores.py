"""Damaged MLflow stores are one line naming the store and the problem, and nothing is half-registered:
a text file named mlflow.db, corrupt pages, a read-only store, a full disk for the database or artifacts."""

from __future__ import annotations

import errno
import fcntl
import shutil

import pytest

from clinfuse.pipeline.cli import main
from clinfuse.pipeline.tracking import lock_path


def _store(tmp_path, monkeypatch):
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    return db


def _register(finished_run, mimic_cohort, fast_params, out):
    run, evaluation = finished_run
    return main(["--params", str(fast_params), "register", "--cohort", str(mimic_cohort), "--runs", str(run.parent),
                 "--evaluations", str(evaluation), "--out", str(out)])


def _one_line_error(capsys) -> str:
    """The error line (MLflow's own INFO lines about creating a new store's tables are left aside)."""
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if " INFO mlflow." not in line]
    assert len(lines) == 1, "\n".join(lines)[-3000:]
    return lines[0]


def _healthy_store(db):
    """A real store with one experiment and a few runs (enough pages to damage)."""
    import mlflow

    from clinfuse.pipeline.tracking import setup_mlflow

    experiment = setup_mlflow("clinfuse/other")
    for _ in range(20):
        with mlflow.start_run(experiment_id=experiment):
            mlflow.log_params({f"p{j}": "x" * 100 for j in range(40)})
    return db


def test_a_text_file_named_mlflow_db_is_refused_and_kept(finished_run, mimic_cohort, fast_params, tmp_path,
                                                         monkeypatch, capsys):
    db = _store(tmp_path, monkeypatch)
    db.write_text("my notes, not a database\n")
    code = _register(finished_run, mimic_cohort, fast_params, tmp_path / "registry.json")
    err = _one_line_error(capsys)
    assert code == 2 and f"{db}: not a SQLite database" in err
    assert db.read_text() == "my notes, not a database\n" and not (tmp_path / "registry.json").exists()


def test_a_store_with_corrupt_pages_is_refused_by_train_register_and_predict(finished_run, mimic_cohort, fast_params,
                                                                             tmp_path, monkeypatch, capsys):
    db = _healthy_store(_store(tmp_path, monkeypatch))
    data = bytearray(db.read_bytes())
    for offset in range(4096 * 3, len(data), 4096 * 2):
        data[offset:offset + 200] = b"\xff" * 200
    db.write_bytes(bytes(data))
    capsys.readouterr()
    code = _register(finished_run, mimic_cohort, fast_params, tmp_path / "registry.json")
    err = _one_line_error(capsys)
    assert code == 2 and f"{db}: the MLflow store is damaged (SQLite: " in err
    assert not (tmp_path / "registry.json").exists()
    code = main(["--params", str(fast_params), "train", "--cohort", str(mimic_cohort), "--method", "late_fusion",
                 "--out", str(tmp_path / "run")])
    assert code == 2 and "the MLflow store is damaged" in _one_line_error(capsys)
    assert not (tmp_path / "run").exists()
    code = main(["predict", "--model", "models:/x@champion", "--cohort", str(mimic_cohort),
                 "--out", str(tmp_path / "p.parquet")])
    assert code == 2 and "the MLflow store is damaged" in _one_line_error(capsys)


@pytest.mark.parametrize("what", ["file", "folder"])
def test_register_into_a_read_only_store_is_refused_before_writing(finished_run, mimic_cohort, fast_params, tmp_path,
                                                                   monkeypatch, capsys, what):
    db = _healthy_store(_store(tmp_path, monkeypatch))
    before = db.read_bytes()
    target = db if what == "file" else db.parent
    target.chmod(0o444 if what == "file" else 0o555)
    try:
        capsys.readouterr()
        code = _register(finished_run, mimic_cohort, fast_params, tmp_path / "registry.json")
    finally:
        target.chmod(0o644 if what == "file" else 0o755)
    err = _one_line_error(capsys)
    assert code == 2 and f"{db}: the MLflow store is read-only ({target} is not writable)" in err
    assert db.read_bytes() == before and not (tmp_path / "registry.json").exists()


def _versions(db, name="mimic-phenotype"):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")
    return client.search_model_versions(f"name = '{name}'")


def test_a_full_disk_for_the_artifacts_leaves_no_version(finished_run, mimic_cohort, fast_params, tmp_path,
                                                         monkeypatch, capsys):
    import mlflow

    db = _store(tmp_path, monkeypatch)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(db.parent / "mlartifacts" / "model.pt2"))

    monkeypatch.setattr(mlflow.models.Model, "log", full)
    code = _register(finished_run, mimic_cohort, fast_params, tmp_path / "registry.json")
    err = _one_line_error(capsys)
    assert code == 2 and "registering failed: no space left on the device" in err and "model.pt2" in err
    assert _versions(db) == [] and not (tmp_path / "registry.json").exists()


def test_a_full_disk_for_the_database_leaves_no_half_registered_version(finished_run, mimic_cohort, fast_params,
                                                                       tmp_path, monkeypatch, capsys):
    import mlflow
    from mlflow.exceptions import MlflowException

    db = _store(tmp_path, monkeypatch)
    real = mlflow.MlflowClient.set_model_version_tag

    def full(self, name, version, key, value):
        if key == "synthetic":  # after the version and some of its tags were written
            raise MlflowException("(sqlite3.OperationalError) database or disk is full")
        return real(self, name, version, key, value)

    monkeypatch.setattr(mlflow.MlflowClient, "set_model_version_tag", full)
    code = _register(finished_run, mimic_cohort, fast_params, tmp_path / "registry.json")
    err = _one_line_error(capsys)
    assert code == 2 and f"{db}: registering failed: no space left on the device" in err
    assert _versions(db) == [], "a version without its tags was left in the registry"
    assert not (tmp_path / "registry.json").exists()


def test_register_gives_up_on_a_held_store_lock_after_its_setting(finished_run, mimic_cohort, tmp_path, monkeypatch,
                                                                 capsys):
    db = _store(tmp_path, monkeypatch)
    params = tmp_path / "params.yaml"
    params.write_text("registry:\n  lock_timeout_s: 0.5\n")
    run, evaluation = finished_run
    with open(lock_path(f"sqlite:///{db}"), "a") as holder:  # another process holds it (flock is per open file)
        fcntl.flock(holder, fcntl.LOCK_EX)
        code = main(["--params", str(params), "register", "--cohort", str(mimic_cohort), "--runs", str(run.parent),
                     "--evaluations", str(evaluation), "--out", str(tmp_path / "registry.json")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "waiting for another process to release" in lines[0]
    assert "still locked by another process after 0.5 s" in lines[-1] and "registry.lock_timeout_s" in lines[-1]
    assert not (tmp_path / "registry.json").exists()
    shutil.rmtree(db.parent)

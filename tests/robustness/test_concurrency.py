"""Several processes on one MLflow store and one registered name (real processes, not threads)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run_all(scripts: list[str], env_uri: str, timeout: int = 240) -> list[subprocess.CompletedProcess]:
    import os

    env = {**os.environ, "MLFLOW_TRACKING_URI": env_uri, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", s], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for s in scripts]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return results


def test_three_processes_opening_a_fresh_store_at_once_all_succeed_and_leave_it_usable(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    script = textwrap.dedent("""
        import sys
        from clinfuse.pipeline.tracking import setup_mlflow
        import mlflow
        exp = setup_mlflow("clinfuse/race")
        with mlflow.start_run(experiment_id=exp):
            mlflow.log_metric("x", float(sys.argv[-1]) if len(sys.argv) > 1 else 1.0)
        print(exp)
    """)
    results = _run_all([script] * 3, uri)
    for r in results:
        assert r.returncode == 0, r.stderr[-2000:]
    assert len({r.stdout.strip() for r in results}) == 1  # one experiment, not three
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([results[0].stdout.strip()])
    assert len(runs) == 3


def test_concurrent_registrations_always_leave_the_better_version_as_champion(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "model").mkdir()
    setup = textwrap.dedent(f"""
        SOURCE = {str(tmp_path / "model")!r}
        from clinfuse.pipeline.tracking import setup_mlflow
        import mlflow
        setup_mlflow("clinfuse/reg")
        c = mlflow.MlflowClient()
        c.create_registered_model("m")
        for metric in (0.9, 0.5):
            v = c.create_model_version("m", source=SOURCE, run_id=None)
            c.set_model_version_tag("m", v.version, "val_metric", str(metric))
    """)
    assert _run_all([setup], uri)[0].returncode == 0
    mover = textwrap.dedent("""
        import sys
        from clinfuse.pipeline.tracking import setup_mlflow
        from clinfuse.pipeline.registry import move_champion_if_better
        import mlflow
        setup_mlflow("clinfuse/reg")
        version, metric = int(sys.argv[1]), float(sys.argv[2])
        print(move_champion_if_better(mlflow.MlflowClient(), "m", version, metric))
    """)
    for _trial in range(3):
        scripts = [mover.replace("sys.argv[1]", "'1'").replace("sys.argv[2]", "'0.9'"),
                   mover.replace("sys.argv[1]", "'2'").replace("sys.argv[2]", "'0.5'")]
        results = _run_all(scripts, uri)
        for r in results:
            assert r.returncode == 0, r.stderr[-2000:]
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        assert int(client.get_model_version_by_alias("m", "champion").version) == 1
        client.delete_registered_model_alias("m", "champion")


def test_parallel_training_runs_log_every_metric_to_one_store_without_database_is_locked(tmp_path):
    """A `dvc queue start --jobs 2` sweep: two trainings log to one SQLite store at the same time,
    through the trainer's own tracker (start, params, tags, a metric every step, end)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    script = textwrap.dedent("""
        from clinfuse.pipeline.trainer import _Tracker
        params = {"method": {"method": "masam", "options": {"rho": 0.3}}, "train": {"lr": 0.002}}
        tracker = _Tracker(True, "clinfuse/sweep", "masam-s{seed}", None, params)
        tracker.tags({"seed": "{seed}"})
        for step in range(1, 41):
            tracker.metrics({"step/loss_total": 1.0 / step, "step/gamma_cxr": 0.5}, step)
        tracker.end()
        print(tracker.run_id)
    """)
    results = _run_all([script.replace("{seed}", str(seed)) for seed in (42, 123)], uri)
    for r in results:
        assert r.returncode == 0, r.stderr[-2000:]
        assert "database is locked" not in r.stderr
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    for r in results:
        run = client.get_run(r.stdout.strip().splitlines()[-1])
        assert run.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "step/loss_total")] == list(range(1, 41))
    assert sorted(client.get_run(r.stdout.strip().splitlines()[-1]).data.tags["seed"] for r in results) == [
        "123", "42"]

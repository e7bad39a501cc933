"""The registered champion leaves the project: a moved project serves it, and it serves without clinfuse installed.

Uses the session's tiny finished pipeline (tests/evaluation/conftest.py).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from clinfuse.pipeline.cli import main

INPUTS = ["ehr", "cxr", "has_ehr", "has_cxr"]
OFFLINE = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "PIP_NO_INDEX": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "NO_PROXY": "127.0.0.1,localhost"}


def _record(root: Path) -> dict:
    return json.loads((root / "registry.json").read_text())[0]


def _eager(root: Path, record: dict, named: dict) -> np.ndarray:
    from tests.evaluation.test_mlflow_serving import eager_probabilities

    return eager_probabilities(root, record, named)


def _download(uri: str, tracking: str, dst: Path) -> Path:
    import mlflow

    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(tracking)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))


def _locations(db: Path) -> list[str]:
    with sqlite3.connect(db) as con:
        return [v for (v,) in con.execute(
            "SELECT artifact_location FROM experiments UNION ALL SELECT artifact_uri FROM runs "
            "UNION ALL SELECT storage_location FROM model_versions UNION ALL SELECT artifact_location FROM logged_models")]


@pytest.fixture
def moved_project(pipeline_run, tmp_path):
    """A copy of the finished project elsewhere, with the original's artifacts out of reach while it is used."""
    root, _, _ = pipeline_run
    copy = tmp_path / "moved-project"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("*.lock"))
    away = root / "mlartifacts.away"
    (root / "mlartifacts").rename(away)  # as if the original were gone (or on another machine)
    try:
        yield root, copy
    finally:
        away.rename(root / "mlartifacts")


def test_a_moved_project_rebases_its_store_and_serves_its_champion_from_its_own_artifacts(moved_project, tmp_path):
    root, copy = moved_project
    record = _record(root)
    db = copy / "mlflow.db"
    assert any(str(root) in loc for loc in _locations(db))  # MLflow recorded the old folder, absolutely
    assert main(["relocate-store", "--store", str(db)]) == 0
    locations = [loc for loc in _locations(db) if "/mlartifacts/" in loc]  # not MLflow's Default experiment's
    assert locations and all(str(copy) + "/mlartifacts/" in loc for loc in locations)
    assert not [loc for loc in _locations(db) if str(root) + "/" in loc]
    assert main(["relocate-store", "--store", str(db)]) == 0  # idempotent: nothing left to rebase
    # served by MLflow itself (not clinfuse), from the moved store only
    local = _download(f"models:/{record['name']}@champion", f"sqlite:///{db}", tmp_path / "model")
    example = local / "serving_input_example.json"
    out = tmp_path / "predictions.json"
    env = {**os.environ, **OFFLINE, "MLFLOW_TRACKING_URI": f"sqlite:///{db}"}
    done = subprocess.run([sys.executable, "-m", "mlflow", "models", "predict", "-m", f"models:/{record['name']}@champion",
                           "-i", str(example), "-t", "json", "-o", str(out), "--env-manager", "local"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    named = {k: np.asarray(v, np.float32) for k, v in json.loads(example.read_text())["inputs"].items()}
    served = np.array([list(row.values()) for row in json.loads(out.read_text())["predictions"]])
    np.testing.assert_allclose(served, _eager(root, record, named), atol=1e-5)


def test_clinfuse_commands_rebase_a_moved_store_on_first_use(moved_project, monkeypatch, capsys, tmp_path):
    root, copy = moved_project
    record = _record(root)
    db = copy / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    out = tmp_path / "predictions.parquet"
    assert main(["predict", "--model", f"models:/{record['name']}@champion", "--cohort",
                 str(copy / "data" / "mimic-phenotype"), "--out", str(out)]) == 0
    assert "the MLflow store moved: " in capsys.readouterr().err
    assert out.stat().st_size > 0
    assert all(str(copy) in loc for loc in _locations(db) if "/mlartifacts/" in loc)


def test_relocate_store_names_a_missing_store_in_one_line(tmp_path, capsys):
    assert main(["relocate-store", "--store", str(tmp_path / "nope.db")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"clinfuse relocate-store: error: {tmp_path / 'nope.db'}: no such MLflow store (expected the SQLite file mlflow.db)"


def test_the_registered_model_carries_clinfuse_and_loads_where_clinfuse_is_not_installed(pipeline_run, tmp_path):
    root, _, _ = pipeline_run
    record = _record(root)
    local = _download(f"models:/{record['name']}@champion", record["tracking_uri"], tmp_path / "model")
    assert (local / "code" / "clinfuse" / "pipeline" / "serving.py").is_file()
    assert (local / "code" / "clinfuse" / "etl" / "errors.py").is_file()
    assert not list(local.glob("code/**/__pycache__"))
    requirements = {line.split("=")[0].split(">")[0] for line in (local / "requirements.txt").read_text().split()}
    assert {"torch", "mlflow", "numpy", "pandas"} <= requirements
    # This venv's packages without its site hooks (-S: no .pth files, so not the editable clinfuse), from a
    # folder that is not the checkout: clinfuse can only come from the model's own code/.
    site = sysconfig.get_paths()["purelib"]
    code = ("import importlib.util, json, sys, numpy as np, mlflow.pyfunc\n"
            "assert importlib.util.find_spec('clinfuse') is None, 'clinfuse importable before loading'\n"
            f"m = mlflow.pyfunc.load_model({str(local)!r})\n"
            "import clinfuse; print(json.dumps({'from': clinfuse.__file__, "
            "'probs': m.predict(m.input_example).to_numpy().tolist()}))\n")
    env = {**{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CLINFUSE_REPO_ROOT")}, **OFFLINE,
           "PYTHONPATH": site}
    done = subprocess.run([sys.executable, "-S", "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(result["from"]).is_relative_to(local / "code")
    example = json.loads((local / "serving_input_example.json").read_text())["inputs"]
    named = {k: np.asarray(v, np.float32) for k, v in example.items()}
    np.testing.assert_allclose(result["probs"], _eager(root, record, named), atol=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_fresh_venv_with_only_mlflow_and_torch_serves_the_champion_from_the_registry(pipeline_run, tmp_path):
    import mlflow
    import torch

    root, _, _ = pipeline_run
    record = _record(root)
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CLINFUSE_REPO_ROOT", "VIRTUAL_ENV")}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    torch_version = torch.__version__.split("+")[0]
    done = subprocess.run([*pip, f"torch=={torch_version}", f"mlflow=={mlflow.__version__}"], env=env,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:]
    port = _free_port()
    serve_env = {**env, **OFFLINE, "MLFLOW_TRACKING_URI": record["tracking_uri"],
                 "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}"}
    server = subprocess.Popen([str(venv / "bin" / "mlflow"), "models", "serve", "-m",
                               f"models:/{record['name']}@champion", "--env-manager", "local", "-h", "127.0.0.1",
                               "-p", str(port)], env=serve_env, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        local = _download(f"models:/{record['name']}@champion", record["tracking_uri"], tmp_path / "model")
        body = (local / "serving_input_example.json").read_bytes()
        deadline = time.time() + 300
        while True:
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                                 headers={"Content-Type": "application/json"})
                with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=30) as r:
                    answer = json.loads(r.read())
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()[-3000:]
                assert time.time() < deadline, "the server did not answer within 300 s"
                time.sleep(2)
    finally:
        server.terminate()
        server.wait(timeout=60)
    named = {k: np.asarray(v, np.float32) for k, v in json.loads(body)["inputs"].items()}
    served = np.array([list(row.values()) for row in answer["predictions"]])
    np.testing.assert_allclose(served, _eager(root, record, named), atol=1e-5)

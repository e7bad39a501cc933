"""The wheel, installed into a fresh virtual environment, runs the whole chain from an empty folder.

`pip install .` ships only what setuptools packages, so this catches data files the commands read
(configs, templates, code lists) that a checkout has but a wheel would lack, and any code that
finds them through the working directory instead of the installed package. pip is called as the
Makefile calls it (`python -m pip install --quiet`), so it uses the same package indexes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What a source build reads; `clinfuse` only exists once the sources are installed under that namespace.
SOURCES = ("pipeline", "etl", "models", "evaluation", "configs", "clinfuse")
TINY = """\
synth: {subjects: 60, seed: 3, adni_subjects: 40, mri_size: 12, cxr_height: 32, cxr_width: 32, dicom_copies: 2}
etl_mimic: {cxr_size: 16, workers: 1, threads: 1, memory_limit: 512MB}
etl_adni: {mri_size: 12, workers: 1}
evaluate: {n_resamples: 20}
registry: {example_rows: 2}
"""


def _run(args: list[str], cwd: Path, env: dict) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the project's wheel installed (not editable); returns its bin folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in SOURCES:
        if (ROOT / folder).is_dir():
            shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp / "dist"), str(src)], tmp, env)
    (wheel,) = (tmp / "dist").glob("clinfuse-*.whl")
    _run([sys.executable, "-m", "venv", str(tmp / "venv")], tmp, env)
    _run([str(tmp / "venv" / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)], tmp, env)
    return tmp / "venv" / "bin"


@pytest.mark.slow
def test_installed_wheel_runs_synth_etl_train_evaluate_report_register_predict_from_an_empty_folder(installed, tmp_path):
    work = tmp_path / "empty"
    work.mkdir()
    params = tmp_path / "tiny.yaml"  # outside the working folder: nothing of the project sits beside the commands
    params.write_text(TINY)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI", "CLINFUSE_REPO_ROOT")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1")
    clinfuse = [str(installed / "clinfuse")]
    tiny = [*clinfuse, "--params", str(params)]
    _run([*tiny, "synth", "--out", "raw"], work, env)
    _run([*tiny, "etl", "mimic", "--task", "mortality", "--mimic-iv", "raw/mimic-iv", "--mimic-cxr", "raw/mimic-cxr-jpg",
          "--out", "processed/mimic-mortality"], work, env)
    _run([*tiny, "etl", "adni", "--adni", "raw/adni", "--out", "processed/adni"], work, env)
    # no --params: params.yaml is absent here, so training runs on the code defaults (plus --epochs)
    _run([*clinfuse, "train", "--cohort", "processed/adni", "--method", "masam", "--seed", "1", "--epochs", "1",
          "--device", "cpu", "--out", "runs/adni/masam-s1"], work, env)
    _run([*tiny, "evaluate", "--run", "runs/adni/masam-s1", "--out", "evaluations/adni/masam-s1"], work, env)
    _run([*tiny, "report", "--cohort", "processed/adni", "--runs", "evaluations/adni", "--out", "reports/adni"], work, env)
    assert 'id="comparison"' in (work / "reports" / "adni" / "report.html").read_text()
    _run([*tiny, "register", "--cohort", "processed/adni", "--runs", "runs/adni", "--evaluations", "evaluations/adni",
          "--out", "reports/adni/registry.json"], work, env)
    name = json.loads((work / "reports" / "adni" / "registry.json").read_text())[0]["name"]
    _run([*tiny, "predict", "--model", f"models:/{name}@champion", "--cohort", "processed/adni",
          "--out", "predictions.parquet"], work, env)
    assert (work / "predictions.parquet").stat().st_size > 0
    assert (work / "mlflow.db").is_file()  # the store sits where the commands ran, not in site-packages


@pytest.mark.slow
def test_installed_clinfuse_and_a_notebooks_own_models_and_pipeline_packages_do_not_shadow_each_other(
        installed, tmp_path):
    for name in ("models", "pipeline"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"WHOSE = 'yours: {name}'\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = ("import models, pipeline, clinfuse.models.fusion, clinfuse.pipeline.cli; "
            "print(models.WHOSE); print(pipeline.WHOSE); print(clinfuse.models.fusion.__name__)")
    out = _run([str(installed / "python"), "-c", code], tmp_path, env)  # the CWD comes first on sys.path
    assert out.splitlines() == ["yours: models", "yours: pipeline", "clinfuse.models.fusion"]

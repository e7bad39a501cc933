"""The notebook runs top to bottom as Jupyter runs it: a kernel started in the project's notebooks/ folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "inspect_run.ipynb"


def test_notebook_run_from_notebooks_finds_the_project_and_shows_auprc_cis_and_the_champions_predictions(
        pipeline_run, tmp_path, monkeypatch):
    root, _, cohort = pipeline_run
    project = tmp_path / "project"  # laid out as `dvc repro` leaves a project (default paths)
    (project / "notebooks").mkdir(parents=True)
    (project / "dvc.yaml").write_text("stages: {}\n")
    shutil.copy(root / "params.yaml", project / "params.yaml")
    (project / "reports" / "mimic-phenotype").mkdir(parents=True)
    os.symlink(root / "eval", project / "reports" / "mimic-phenotype" / "runs")
    shutil.copy(root / "registry.json", project / "reports" / "mimic-phenotype" / "registry.json")
    (project / "data" / "processed").mkdir(parents=True)
    os.symlink(cohort, project / "data" / "processed" / "mimic-phenotype")
    shutil.copy(NOTEBOOK, project / "notebooks" / NOTEBOOK.name)
    for name in ("CLINFUSE_REPORT_DIR", "CLINFUSE_EVAL_DIR", "CLINFUSE_COHORT_DIR", "CLINFUSE_REGISTRY_JSON",
                 "CLINFUSE_REPO_ROOT"):
        monkeypatch.delenv(name, raising=False)
    nb = nbformat.read(project / "notebooks" / NOTEBOOK.name, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(project / "notebooks")}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    text = "".join(o.get("text", "") for c in code for o in c.get("outputs", []))
    assert f"project: {project}" in text
    assert "2 methods, 1 seed(s), 3 labels" in text
    assert "largest difference to the saved test predictions" in text
    html = "".join(o.get("data", {}).get("text/html", "") for c in code for o in c.get("outputs", []))
    assert "CI low" in html and "late_fusion" in html and "masam" in html  # the per-label table, every method
    assert any("image/png" in o.get("data", {}) for c in code for o in c.get("outputs", []))  # the plot

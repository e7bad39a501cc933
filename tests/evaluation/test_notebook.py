"""The notebook runs top to bottom against a finished (tiny) pipeline."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "inspect_run.ipynb"


def test_notebook_reads_report_data_and_champion_model(pipeline_run, monkeypatch):
    root, _, cohort = pipeline_run
    monkeypatch.setenv("CLINFUSE_REPORT_DIR", str(root / "report"))
    monkeypatch.setenv("CLINFUSE_COHORT_DIR", str(cohort))
    monkeypatch.setenv("CLINFUSE_REGISTRY_JSON", str(root / "registry.json"))
    monkeypatch.setenv("CLINFUSE_EVAL_DIR", str(root / "eval"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parents[1])}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "largest difference to the saved test predictions" in outputs

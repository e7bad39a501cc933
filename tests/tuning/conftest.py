"""A tiny cohort and a params file for tuning tests (1-epoch trials, a 1 s heartbeat)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.fixtures.cohorts import write_cohort

FAST_TUNE = {"heartbeat_seconds": 1, "grace_seconds": 3}


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cohorts") / "mimic-phenotype"
    write_cohort(path, "mimic")
    return path


def write_params(folder: Path, budget: int, epochs: int = 1, **tune) -> Path:
    """params.yaml for a study of `budget` trials of `epochs` epochs each."""
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump({
        "paths": {"tuning": str(folder / "tuning")},
        "train": {"epochs": epochs, "batch_size": 16, "num_threads": 1},
        "tune": {"budget": budget, **FAST_TUNE, **tune},
    }))
    return path


def tune_args(cohort: Path, method: str, params: Path, **extra) -> SimpleNamespace:
    """The parsed arguments of `clinfuse tune` (what the command module receives)."""
    base = dict(cohort=str(cohort), method=method, search=None, out=None, budget=None, sampler=None, storage=None,
                worker=False, no_tracking=True, params=str(params))
    return SimpleNamespace(**(base | extra))

"""Where a training run lives: `<runs>/<cohort>/<method>-s<seed>/`.

The folder name is also the run's MLflow run name, and dvc.yaml's `train` stage writes
the same pattern (tests/test_architecture.py checks that they agree). Kept apart from
`pipeline.results` so that the training stage, which needs only this name, does not
re-run when the results I/O changes (DVC deps are whole files).
"""

from __future__ import annotations

from pathlib import Path


def run_name(method: str, seed: int) -> str:
    """`<method>-s<seed>`: the run folder and MLflow run name of one (method, seed) run.

    Args:
        method: the method config name (`clinfuse train --method`, configs/methods/<name>.yaml).
        seed: the run's seed.
    """
    return f"{method}-s{seed}"


def run_dir(runs_root: str | Path, cohort: str, method: str, seed: int) -> Path:
    """`<runs_root>/<cohort>/<method>-s<seed>`: the default folder of one training run."""
    return Path(runs_root) / cohort / run_name(method, seed)

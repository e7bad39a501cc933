"""What `dvc repro` trains (params.yaml `sweep:`): cohorts x methods x seeds.

Kept apart from `train:` so that adding a seed or a method adds DVC stages
without invalidating the runs already made.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import StrictModel


class SweepSettings(StrictModel):
    cohorts: list[str] = Field(default_factory=lambda: ["mimic-phenotype", "mimic-mortality", "adni"])
    methods: list[str] = Field(default_factory=lambda: ["late_fusion", "sam", "masam"])  # configs/methods/<name>.yaml
    seeds: list[int] = Field(default_factory=lambda: [42])  # the paper's protocol: [42, 123, 1234, 2024]
    # MIMIC tasks that also get a partially paired cohort, data/processed/mimic-<task>-partial (stays
    # without a film kept); list those cohorts in `cohorts` to train, evaluate and report them.
    partially_paired: list[Literal["phenotype", "mortality"]] = Field(default_factory=list)

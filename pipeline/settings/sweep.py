"""What `dvc repro` trains (params.yaml `sweep:`): cohorts x methods x seeds.

Kept apart from `train:` so that adding a seed or a method adds DVC stages
without invalidating the runs already made.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .base import StrictModel

# Seeds are 32-bit (numpy's legacy RNG takes no more; the trainer derives per-epoch seeds from them)
MAX_SEED = 2**32 - 1
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class SweepSettings(StrictModel):
    cohorts: list[str] = Field(default_factory=lambda: ["mimic-phenotype", "mimic-mortality", "adni"])
    methods: list[str] = Field(default_factory=lambda: ["late_fusion", "sam", "masam"])  # configs/methods/<name>.yaml
    seeds: list[Seed] = Field(default_factory=lambda: [42])  # the paper's protocol: [42, 123, 1234, 2024]
    # MIMIC tasks that also get a partially paired cohort, data/processed/mimic-<task>-partial (stays
    # without a film kept); list those cohorts in `cohorts` to train, evaluate and report them.
    partially_paired: list[Literal["phenotype", "mortality"]] = Field(default_factory=list)

"""Analysis settings (params.yaml `analyze:`): the "why" figures of each cohort.

The defaults are light enough for the CPU demo (Hutchinson vectors until a 10 % relative
standard error, small landscape grids, probes on a subset); the definitions do not change with them. For a paper-grade
analysis raise hutchinson_vectors (PyHessian uses 100+), power_iters, landscape_points_*
and the sample counts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import StrictModel


class AnalyzeSettings(StrictModel):
    seed: int = 0  # Rademacher vectors, power-iteration start and landscape directions (same for every method)
    # Which of the sweep's seeds are analysed: "all", or "first" (the seed the report's figures and claims
    # use) to keep a many-seed sweep's analysis affordable on a CPU (`make demo-full`).
    seeds: Literal["all", "first"] = "all"
    hessian_batches: int = Field(1, ge=1)  # fixed training batches (in row order) the Hessian is taken on
    batch_size: int = Field(16, ge=1)
    # Hutchinson vectors: at least `hutchinson_vectors`, then more until the trace's standard error is
    # at most trace_target_rel_se x |trace| or hutchinson_max_vectors are drawn (the report says which).
    hutchinson_vectors: int = Field(8, ge=2)
    hutchinson_max_vectors: int = Field(16, ge=2)
    trace_target_rel_se: float = Field(0.1, gt=0)
    # Power iteration stops when the eigenvalue changes by less than power_tol (relative) or after
    # power_iters; an unconverged or negative value is marked as such, never drawn as sharpness.
    power_iters: int = Field(10, ge=1)
    power_tol: float = Field(1e-2, gt=0)
    landscape_span: float = Field(1.0, gt=0)  # grid covers [-span, span] in filter-normalised units
    landscape_points_1d: int = Field(9, ge=3)
    landscape_points_2d: int = Field(5, ge=3)
    landscape_samples: int = Field(64, ge=8)  # training / test samples the landscape losses use
    probe_max_train: int = Field(1000, ge=10)  # training samples the linear probes are fitted on
    probe_c: float = Field(1.0, gt=0)
    # Efficiency (paper Table 10; pipeline/efficiency.py), measured in the analyze process: per method,
    # `efficiency_warmup` untimed then `efficiency_repeats` timed training steps and forward passes on one
    # batch of `efficiency_batch`; the report gives the median with its quartiles and range.
    efficiency: bool = True
    efficiency_batch: int = Field(8, ge=1)
    efficiency_repeats: int = Field(10, ge=1)
    efficiency_warmup: int = Field(2, ge=0)
    proposed: list[str] = Field(default_factory=lambda: ["masam"])  # not baselines in the tables' gains
    sensitivity_method: str = "masam"
    sensitivity_options: list[str] = Field(default_factory=lambda: ["alpha", "beta", "rho"])
    # The grids the README's `dvc exp run --queue` commands train (paper Figs. 14 and 6); the
    # analysis plots whatever runs exist and lists the grid points still missing.
    sensitivity_grid: dict[str, list[float]] = Field(default_factory=lambda: {
        "alpha": [0.1, 0.3, 0.5, 0.7, 0.9], "beta": [0.5, 0.7, 0.9, 0.99], "rho": [0.05, 0.1, 0.3, 0.5, 1.0]})
    noise_rates: list[float] = Field(default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.4])
    # The report's paired-difference table: the first of `proposed` minus this method (late fusion: the
    # same network without re-balancing, the reference point of every balancing method).
    reference: str = "late_fusion"
    # Explanations (DESIGN section 10; pipeline/explanations.py): modality Shapley values on the test split,
    # Captum attributions for the cases shown. Bounded here so the demo's analyze stage stays cheap.
    explain: bool = True
    explain_max_patients: int = Field(2000, ge=1)  # test patients (all their rows) in the reliance table
    explain_resamples: int = Field(1000, ge=10)  # patient-bootstrap resamples of the reliance shares
    explain_ci_level: float = Field(0.95, gt=0, lt=1)
    explain_case_labels: int = Field(3, ge=1)  # labels with cases in the report (most test positives first)
    explain_cases_per_rule: int = Field(1, ge=1)  # patients per rule (top true positive, false positive, missed)
    explain_ig_steps: int = Field(32, ge=2)  # Integrated Gradients integration points
    explain_top_variables: int = Field(5, ge=1)

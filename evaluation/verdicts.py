"""Method-vs-method comparisons for the report and the summary: which pairs, their seed-aware
intervals, a verdict line each, Holm-adjusted per-label tests, and whether the champion's
validation margin is within noise.

Every comparison pairs the two methods on the seeds both have and on the same test patients
(`seed_statistics.difference_from_draws`). The verdict is read from the two-level bootstrap
interval, which includes training (seed) and test-sampling (patient) variance when there are
two or more seeds; with one seed it covers test patients only, and every line says so.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .bootstrap import paired_bootstrap_difference
from .champion import champion_of
from .report import fmt
from .seed_statistics import (
    bootstrap_weights,
    difference_from_draws,
    holm_adjust,
    metric_draws,
    seed_draws,
)

ALPHA = 0.05  # the verdicts' and Holm's significance level; the minimum detectable difference uses 80 % power
POWER = 0.80


class RunScores(NamedTuple):
    """One evaluated run's predictions on a split."""

    y: np.ndarray  # [N, K] 0/1 indicators
    p: np.ndarray  # [N, K] probabilities
    patient_id: np.ndarray  # [N]


def comparison_pairs(methods: list[str], proposed: list[str], reference: str | None) -> list[tuple[str, str]]:
    """(method, reference method) pairs: every method against `reference`, then each proposed method
    against each other method that is not proposed (the forest plots' pairs); each pair once, in `methods` order.
    """
    pairs = [(m, reference) for m in methods if reference in methods and m != reference]
    pairs += [(p, b) for p in proposed if p in methods for b in methods if b not in proposed and b != reference]
    return list(dict.fromkeys(pairs))


def _same_rows(runs: list[dict], scores: list[RunScores]) -> None:
    """Every run must hold predictions for the same test rows (same labels, same patients, same order)."""
    first = scores[0]
    for r, s in zip(runs, scores, strict=True):
        if s.y.shape != first.y.shape or not (np.array_equal(s.y, first.y)
                                              and np.array_equal(s.patient_id, first.patient_id)):
            raise ValueError(f"run {r['run']}: its test predictions do not cover the same rows as run {runs[0]['run']} "
                             "(same patients and labels in the same order); evaluate every run of the cohort again")


def compare_methods(runs: list[dict], scores: list[RunScores], pairs: list[tuple[str, str]], labels: list[str],
                    n_resamples: int, seed: int, level: float, unit: str = "stays") -> list[dict[str, Any]]:
    """The seed-aware comparison of each pair, paired on the seeds both methods have.

    Args:
        runs: evaluated runs (`method`, `seed`, `run`); a later run of the same method and seed replaces
            an earlier one.
        scores: each run's test predictions, in the order of `runs` (the same rows for every run).
        pairs: (method, reference) pairs (`comparison_pairs`).
        labels: the K label (class) names.
        n_resamples, seed, level: the bootstrap's resamples, generator seed and confidence level.
        unit: what a test row is ("stays", "visits"), as the verdict line names it.
    Returns:
        One record per pair with common seeds: `method`, `reference`, `seeds`, `n_seeds`, `n_test`,
        `n_test_patients`, `training_variance_measured`, `macro_auprc` and `macro_auroc` (see
        `seed_statistics.difference_from_draws`), `per_label` (AUPRC and AUROC difference per label with
        Holm-adjusted p-values of the AUPRC difference), `verdict` and `line`.
    """
    if not runs:
        return []
    _same_rows(runs, scores)
    by = {(r["method"], r["seed"]): s for r, s in zip(runs, scores, strict=True)}
    y, patients = scores[0].y, scores[0].patient_id
    weights = bootstrap_weights(patients, n_resamples, seed)
    draws: dict[tuple[str, int], np.ndarray] = {}

    def run_draws(key: tuple[str, int]) -> np.ndarray:
        if key not in draws:
            draws[key] = metric_draws(y, by[key].p, weights)
        return draws[key]

    out = []
    for a, b in pairs:
        seeds = sorted({s for (m, s) in by if m == a} & {s for (m, s) in by if m == b})
        if not seeds:
            continue
        diff = difference_from_draws(np.stack([run_draws((a, s)) for s in seeds]),
                                     np.stack([run_draws((b, s)) for s in seeds]),
                                     seed_draws(len(seeds), n_resamples, seed), level)
        holm = holm_adjust([d["auprc"]["p_two_sided"] for d in diff["per_label"]])
        per_label = [{"label": lab, "difference": d["auprc"]["difference"], "ci": d["auprc"]["ci"],
                      "p": d["auprc"]["p_two_sided"], "p_holm": h,
                      "significant_holm": h is not None and h < ALPHA,
                      "auroc_difference": d["auroc"]["difference"], "auroc_ci": d["auroc"]["ci"]}
                     for lab, d, h in zip(labels, diff["per_label"], holm, strict=True)]
        record = {"method": a, "reference": b, "seeds": seeds, "n_seeds": len(seeds), "n_test": int(len(y)),
                  "n_test_patients": int(len(np.unique(patients))), "unit": unit,
                  "training_variance_measured": len(seeds) >= 2, "level": level,
                  "n_resamples": n_resamples, "macro_auprc": diff["macro_auprc"], "macro_auroc": diff["macro_auroc"],
                  "per_label": per_label, "n_labels_tested": sum(h is not None for h in holm),
                  "verdict": diff["macro_auprc"]["verdict"]}
        record["line"] = verdict_line(record)
        out.append(record)
    return out


def _signed(value: float) -> str:
    """"+0.005", "−0.004", "0.000": a sign only where the rounded value has one."""
    text = fmt(value, 3)
    return f"+{text}" if value > 0 and text != fmt(0.0, 3) else text


def verdict_line(c: dict[str, Any], metric_label: str = "macro AUPRC") -> str:
    """"<method> vs <reference>: better / worse / no difference detectable", with the difference and its
    interval, the seeds and test rows, and the smallest difference the design could detect."""
    h = c["macro_auprc"]
    pct = round(100 * c["level"])
    if h["difference"] is None:
        return f"{c['method']} vs {c['reference']}: not computable (no label with both classes in the test split)"
    interval = (f"{fmt(h['ci'][0], 3)} to {fmt(h['ci'][1], 3)}" if h["ci"][0] is not None else "no interval")
    seeds = f"{c['n_seeds']} seed{'s' if c['n_seeds'] != 1 else ''}"
    mde = "not computable" if h["mde"] is None else f"{fmt(h['mde'], 3)}"
    caveat = "" if c["training_variance_measured"] else " (this one seed only: training variance not measured)"
    line = (f"{c['method']} vs {c['reference']}: {h['verdict']}{caveat}; {metric_label} difference "
            f"{_signed(h['difference'])} ({pct}% CI {interval}), {seeds} × "
            f"{c['n_test']} test {c['unit']} ({c['n_test_patients']} patients); smallest detectable difference "
            f"≈ {mde} (80% power, alpha 0.05)")
    if not c["training_variance_measured"]:
        line += (". With one seed the interval covers test patients only and the smallest detectable difference "
                 "is a lower bound: run more seeds for a verdict across training runs")
    return line


def champion_margin(runs: list[dict], val_scores: list[RunScores] | None, n_resamples: int, seed: int,
                    level: float) -> dict[str, Any] | None:
    """Whether the champion's validation lead over the best run of another method is within noise.

    The champion is `champion_of(runs)`; the runner-up is the best-validation run among the other
    methods. The difference of their validation macro AUPRC is bootstrapped over validation patients
    (paired: same resampled patients); the margin is within noise when its interval includes 0.
    None without validation predictions or without a second method.

    Args:
        runs: evaluated runs (`method`, `seed`, `run`, `validation.value`).
        val_scores: each run's validation predictions, in the order of `runs`.
    """
    if not val_scores:
        return None
    champion = champion_of(runs)
    others = [r for r in runs if r["method"] != champion["method"]]
    if not others:
        return None
    runner = champion_of(others)
    index = {id(r): i for i, r in enumerate(runs)}
    a, b = val_scores[index[id(champion)]], val_scores[index[id(runner)]]
    if a.y.shape != b.y.shape or not np.array_equal(a.patient_id, b.patient_id):
        raise ValueError(f"runs {champion['run']} and {runner['run']}: their validation predictions do not cover "
                         "the same rows; evaluate both runs again")
    d = paired_bootstrap_difference(a.y, a.p, b.p, a.patient_id, n_resamples, seed, level)["macro_auprc"]
    lo, hi = d["ci"]
    within = lo is None or lo <= 0  # the lead is established only when the whole interval is above 0
    return {"champion": {"method": champion["method"], "seed": champion["seed"], "run": champion["run"]},
            "runner_up": {"method": runner["method"], "seed": runner["seed"], "run": runner["run"]},
            "difference": d["difference"], "ci": [lo, hi], "level": level, "n_val": int(len(a.y)),
            "n_val_patients": int(len(np.unique(a.patient_id))), "within_noise": bool(within)}

"""Whether one cohort's measured analyses agree with the MASAM paper's claims, in words a caption can carry.

Three claims, each checked for the proposed method against every other fusion method analysed
(the same seed's runs):

- flatter: its per-encoder Hutchinson trace per parameter is lower. Two traces differ only when
  they are more than `z` combined standard errors apart (sqrt(se_a^2 + se_b^2), the vectors of
  two runs being independent); a top eigenvalue enters only when both are converged and
  non-negative (a negative or unconverged one is not a sharpness).
- better probes: its encoders' linear-probe test score is higher, per modality. A probe is one
  fit on one seed: no interval, so a difference below `probe_margin` counts as none.
- higher alignment: its mean gamma_m over the second half of the logged steps is higher, per
  modality (again one seed, `alignment_margin`).

Verdict per claim, over every (other method, encoder or modality) comparison: "agrees" (better
in all), "disagrees" (worse in at least one, better in none), "mixed" (better in some, not in
others), "not distinguishable" (every difference within the tolerance) or "not testable" (the
proposed method or a competitor missing, nothing measurable). Pure functions over plain dicts.
"""

from __future__ import annotations

import math
from typing import Any

AGREES, DISAGREES, MIXED, UNCLEAR, UNTESTABLE = ("agrees", "disagrees", "mixed", "not distinguishable",
                                                "not testable")


def eigenvalue_status(eigenvalue: float | None, converged: bool | None) -> str:
    """How to read a power-iteration eigenvalue: "ok", "not converged" or "negative".

    Power iteration returns the eigenvalue of largest MAGNITUDE: a negative one means the
    point is not a minimum along that direction (a saddle), not that it is flat, and one that
    did not converge is not an eigenvalue yet; neither may be drawn or ranked as sharpness.
    """
    if eigenvalue is None or not converged:
        return "not converged"
    return "negative" if eigenvalue < 0 else "ok"


def _combine(outcomes: list[int]) -> str:
    """+1 better, -1 worse, 0 indistinguishable, per comparison -> the claim's verdict."""
    if not outcomes:
        return UNTESTABLE
    if all(o > 0 for o in outcomes):
        return AGREES
    if any(o > 0 for o in outcomes) and any(o < 0 for o in outcomes):
        return MIXED
    if any(o < 0 for o in outcomes):
        return DISAGREES
    return UNCLEAR if all(o == 0 for o in outcomes) else MIXED


def _compare(a: float, b: float, tolerance: float, lower_is_better: bool) -> int:
    diff = (b - a) if lower_is_better else (a - b)
    return 1 if diff > tolerance else (-1 if diff < -tolerance else 0)


def flatness_claim(rows: list[dict[str, Any]], proposed: str, z: float = 2.0) -> dict[str, Any]:
    """Is `proposed` flatter than every other method, per encoder? rows: the Why section's flatness rows."""
    mine = {r["encoder"]: r for r in rows if r["method"] == proposed}
    others = [r for r in rows if r["method"] != proposed and r["encoder"] in mine]
    outcomes, details, eig_skipped = [], [], []
    for r in others:
        p = mine[r["encoder"]]
        se = math.hypot(p.get("se_per_param") or 0.0, r.get("se_per_param") or 0.0)
        o = _compare(p["trace_per_param"], r["trace_per_param"], z * se, lower_is_better=True)
        outcomes.append(o)
        word = {1: "flatter than", -1: "sharper than", 0: "not distinguishable from"}[o]
        details.append(f"{r['encoder']}: {word} {r['method']} (trace/param {p['trace_per_param']:.3g} vs "
                       f"{r['trace_per_param']:.3g}, {z:g} SE = {z * se:.2g})")
        if p.get("eigenvalue_status", "ok") == "ok" and r.get("eigenvalue_status", "ok") == "ok":
            e = _compare(p["eigenvalue"], r["eigenvalue"], 0.0, lower_is_better=True)
            details.append(f"{r['encoder']} top eigenvalue: {'lower' if e > 0 else 'not lower'} than {r['method']}'s")
        else:
            eig_skipped.append(f"{r['encoder']} ({proposed} {p.get('eigenvalue_status', 'ok')}, "
                               f"{r['method']} {r.get('eigenvalue_status', 'ok')})")
    if eig_skipped:
        details.append("top eigenvalues not compared where one is negative or not converged: " + "; ".join(eig_skipped))
    return {"claim": f"{proposed} leaves each encoder flatter", "verdict": _combine(outcomes), "details": details}


def probe_claim(probes: dict[str, dict[str, float | None]], proposed: str, margin: float = 0.005) -> dict[str, Any]:
    """Do `proposed`'s encoders probe better than every other method's? probes: method -> modality -> score."""
    mine = probes.get(proposed) or {}
    outcomes, details = [], []
    for method, scores in probes.items():
        if method == proposed:
            continue
        for mod, score in scores.items():
            if score is None or mine.get(mod) is None:
                continue
            o = _compare(mine[mod], score, margin, lower_is_better=False)
            outcomes.append(o)
            details.append(f"{mod}: {mine[mod]:.3f} vs {method} {score:.3f}")
    return {"claim": f"{proposed}'s encoders learn better unimodal features (linear probes)",
            "verdict": _combine(outcomes), "details": details}


def mean_late_alignment(records: list[dict[str, Any]]) -> dict[str, float]:
    """Mean gamma_m per modality over the second half of the logged steps ({"step", m: gamma})."""
    late = records[len(records) // 2:]
    mods = {k for r in late for k in r if k != "step"}
    out = {}
    for m in sorted(mods):
        values = [r[m] for r in late if r.get(m) is not None]
        if values:
            out[m] = sum(values) / len(values)
    return out


def alignment_claim(series: dict[str, list[dict[str, Any]]], proposed: str, margin: float = 0.02) -> dict[str, Any]:
    """Is `proposed`'s late-training gamma_m higher than every other method's? series: method -> alignment.json."""
    means = {m: mean_late_alignment(r) for m, r in series.items() if r}
    mine = means.get(proposed) or {}
    outcomes, details = [], []
    for method, by_mod in means.items():
        if method == proposed:
            continue
        for mod, value in by_mod.items():
            if mod in mine:
                outcomes.append(_compare(mine[mod], value, margin, lower_is_better=False))
                details.append(f"γ_{mod}: {mine[mod]:.3f} vs {method} {value:.3f}")
    return {"claim": f"{proposed} keeps each encoder's fused gradient better aligned with its own (higher γ_m)",
            "verdict": _combine(outcomes), "details": details}


def why_claims(analysis: dict[str, Any], seed: int | None, proposed: str | None) -> dict[str, dict[str, Any]]:
    """The three claims' verdicts for the analysed runs of `seed` (the Why section's runs)."""
    runs = [r for r in analysis.get("runs", {}).values() if r.get("seed") == seed]
    if proposed is None or not any(r["method"] == proposed for r in runs):
        why = f"no {proposed} run of seed {seed} was analysed" if proposed else "no proposed method set"
        return {k: {"claim": k, "verdict": UNTESTABLE, "details": [why]} for k in ("flatness", "probes", "alignment")}
    flat = [{"method": r["method"], **row,
             "eigenvalue_status": row.get("eigenvalue_status") or eigenvalue_status(row.get("eigenvalue"),
                                                                                    row.get("power_converged"))}
            for r in runs for row in r.get("flatness", [])]
    probes = {r["method"]: {m: v.get("score") for m, v in (r.get("probes") or {}).items()} for r in runs}
    series = {r["method"]: r["alignment"] for r in runs if r.get("alignment")}
    return {"flatness": flatness_claim(flat, proposed), "probes": probe_claim(probes, proposed),
            "alignment": alignment_claim(series, proposed)}

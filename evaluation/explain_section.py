"""The report's "Reliance" and "Cases" sections, from the explanations `clinfuse analyze` wrote.

Pure: the caller reads the analysis folder (pipeline.results.read_analysis) and passes
analysis.json and its figures in; figures come back as base64 PNG.
"""

from __future__ import annotations

import base64


def explain_section(analysis: dict, figures: dict[str, bytes]) -> dict | None:
    """The sections' data, or None when the analysis holds no explanations.

    Returns:
        modalities, the compared modality, scale, CI level and resamples, test rows/patients,
        the reliance figure, one reliance table per method (its first seed's run: label, then
        the share of each modality with its CI), the sentences where a method's share differs
        from the reference's, the cases per method (each with its figure), the randomisation
        check rows per method, the IG baseline and steps, and the seconds it took.
    """
    ex = analysis.get("explanations")
    if not ex:
        return None
    tables = {}
    for method, run in ex["first_seed_runs"].items():
        rows = ex["reliance"][run]["rows"]
        by_label: dict[str, dict] = {}
        for r in rows:
            by_label.setdefault(r["label"], {})[r["modality"]] = r
        tables[method] = {"run": run, "labels": by_label}
    cases = {}
    for method, c in ex["cases"].items():
        groups: dict[str, dict] = {}
        for case in c["cases"]:
            g = groups.setdefault(case["label"], {"cases": [], "figure": None})
            g["cases"].append(case)
            if case.get("figure") in figures:
                g["figure"] = base64.b64encode(figures[case["figure"]]).decode()
        cases[method] = {"labels": groups, "sanity": c["sanity"]}
    return {"modalities": ex["modalities"], "compared": ex["compared_modality"], "scale": ex["scale"],
            "level": ex["ci_level"], "n_resamples": ex["n_resamples"], "n_rows": ex["n_test_rows"],
            "n_patients": ex["n_test_patients"], "reference": ex["reference"], "sentences": ex["sentences"],
            "reliance_figure": base64.b64encode(figures["reliance"]).decode() if "reliance" in figures else None,
            "tables": tables, "cases": cases, "ig_baseline": ex["ig_baseline"], "ig_steps": ex["ig_steps"],
            "seconds": ex["seconds"], "labels": ex["labels"]}

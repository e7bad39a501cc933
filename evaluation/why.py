"""The report's "Why" section: the numbers and figures of `clinfuse analyze` for a reader.

Pure: the caller reads the analysis folder (pipeline.results.read_analysis) and passes its
contents in; figures come back as base64 PNG for the self-contained page.
"""

from __future__ import annotations

import base64

from .claims import AGREES, DISAGREES, MIXED, UNCLEAR, eigenvalue_status, why_claims

# which figure carries which claim's verdict
CLAIM_FIGURES = {"flatness": "flatness", "probes": "probes", "alignment": "alignment"}
VERDICT_WORDS = {AGREES: "agree with it", DISAGREES: "contradict it", MIXED: "partly agree with it",
                 UNCLEAR: "cannot tell (every difference is within noise)"}


def claim_sentence(claim: dict, cohort: str | None, seed: int | None) -> str:
    """"The paper's claim: ... On <cohort> (seed s) the measured numbers agree with it: details." for a caption."""
    where = f"On {cohort}" if cohort else "Here"
    words = VERDICT_WORDS.get(claim["verdict"], "cannot test it")
    details = "; ".join(claim["details"][:6]) + (" …" if len(claim["details"]) > 6 else "")
    return (f" The paper's claim: {claim['claim']}. {where} (seed {seed}, one run per method) the measured numbers "
            f"{words}" + (f": {details}." if details else "."))

CAPTIONS = {
    "flatness": "Sharpness per encoder: Hutchinson estimate of the Hessian trace of the fused loss, divided by the "
                "encoder's parameter count (error bars ±1 standard error over the Rademacher vectors), and the top "
                "Hessian eigenvalue (power iteration; a negative or unconverged value is labelled, not drawn: it is "
                "no sharpness).",
    "landscape_1d": "Loss along one random filter-normalised direction (Li et al. 2018), over all parameters and per "
                    "encoder; solid = training loss, dashed = test loss. Same direction seed for every method.",
    "landscape_2d_train": "Training-loss contours over two filter-normalised directions (rows: all parameters, then "
                          "each encoder; one colour scale per row). Wider low basins = flatter minima.",
    "landscape_2d_test": "Test-loss contours over the same two directions.",
    "landscape_surface": "The training-loss surface over all parameters, one panel per method (same z range).",
    "alignment": "Gradient alignment over training: γ_m = cos(∇θ_m L_fuse, ∇θ_m L_m) on a fixed training batch "
                 "every train.alignment_every steps. Low or negative γ = the fused objective pulls encoder m away "
                 "from what its own modality alone would learn.",
    "dominant_modality": "{method}'s dominant modality per epoch: the share of optimizer steps in which each "
                         "modality was chosen as dominant (argmax APS) and the epoch-mean APS per modality.",
    "probes": "Linear probes on each frozen encoder (logistic regression fitted on training features, scored on "
              "test). Dashed line: the same probe on the encoder trained alone (unimodal baseline), when that run "
              "exists. Above the line = fusion training left the encoder better than training it alone.",
    "label_noise": "Test metric against the fraction of training labels flipped (mean ± std over seeds).",
    "sensitivity": "{method}'s test metric against alpha, beta and rho (others at their configured values; mean ± std "
                   "over seeds).",
    "efficiency": "Training step time and inference time per sample per method on the same model and batch "
                  "(bar: median of the timed repeats; whiskers: interquartile range), and peak tensor memory "
                  "(defined under the efficiency table).",
}


def why_section(analysis: dict, figures: dict[str, bytes], seed: int | None = None) -> dict:
    """The section's data from an analysis.json and its figures.

    Args:
        analysis: the analysis.json document (runs, settings, skipped, figures, efficiency).
        figures: figure name -> PNG bytes.
        seed: the seed whose runs the flatness table shows, the one the figures were drawn from
            (the sweep's first seed); the smallest seed analysed when no run has it.
    Returns:
        settings, flatness rows (one per method and encoder), skipped analyses, captions,
        figures (base64 PNG), efficiency rows (timings as `evaluation.efficiency.spread` dicts), the
        device they were measured on and how (repeats, warm-up, threads, process, clock, what the memory is).
    """
    seeds = {r["seed"] for r in analysis["runs"].values()}
    if seed not in seeds:
        seed = min(seeds, default=None)
    # an analysis written before the status was recorded gets it from its eigenvalue and convergence
    flat = [{"method": r["method"], **row,
             "eigenvalue_status": row.get("eigenvalue_status") or eigenvalue_status(row.get("eigenvalue"),
                                                                                    row.get("power_converged"))}
            for r in analysis["runs"].values() if r["seed"] == seed for row in r["flatness"]]
    eff = analysis.get("efficiency") or {}
    # the sensitivity runs are those of analyze.sensitivity_method (MASAM by default)
    method = analysis["settings"]["sensitivity_method"].upper()
    captions = {name: text.replace("{method}", method) for name, text in CAPTIONS.items()}
    proposed = (analysis["settings"].get("proposed") or [None])[0]
    claims = why_claims(analysis, seed, proposed)
    for key, figure in CLAIM_FIGURES.items():
        captions[figure] += claim_sentence(claims[key], analysis.get("cohort"), seed)
    return {"settings": analysis["settings"], "flatness": flat, "claims": claims, "skipped": analysis["skipped"], "captions": captions,
            "figures": {n: base64.b64encode(png).decode() for n, png in figures.items()},
            "efficiency": eff.get("methods"), "efficiency_device": f"{eff.get('device')}, batch {eff.get('batch')}",
            "efficiency_setup": {k: eff.get(k) for k in ("repeats", "warmup", "threads", "process", "memory", "clock")}}

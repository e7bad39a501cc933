"""The tuning section: per method, the search space, the trials, the selection on validation, and the
validation score against each hyperparameter (the MASAM paper's Fig. 14, for every method).

Input: the `study.json` records `clinfuse tune` writes (plain dicts); output: plain data and base64
PNG figures. Nothing here reads files or knows about Optuna.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .figure_style import drawn_with  # noqa: E402

STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).lower() if isinstance(value, bool) else str(value)


def describe_space(space: dict[str, Any]) -> list[str]:
    """One line per hyperparameter: `rho: 0.1, 0.3, 0.5` or `lr: 1e-05 to 0.01 (log)`."""
    lines = []
    for key, values in space.items():
        if isinstance(values, list):
            lines.append(f"{key}: {', '.join(_fmt(v) for v in values)}")
        else:
            lines.append(f"{key}: {_fmt(values['low'])} to {_fmt(values['high'])}{' (log)' if values.get('log') else ''}")
    return lines


@drawn_with(STYLE)
def score_by_hyperparameter_figure(trials: list[dict], space: dict[str, Any], metric: str, title: str) -> str | None:
    """One panel per hyperparameter: each complete trial's validation score at its value (grid values as
    evenly spaced categories, ranges on a linear or log axis), the selected trial ringed, the best score
    per value joined. None when no trial completed."""
    done = [t for t in trials if t["state"] == "COMPLETE" and t["value"] is not None]
    if not done or not space:
        return None
    best = max(done, key=lambda t: (t["value"], -t["number"]))
    keys = list(space)
    fig, axes = plt.subplots(1, len(keys), figsize=(2.6 * len(keys) + 0.6, 2.6), sharey=True, squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        values = space[key]
        if isinstance(values, list):
            position = {_fmt(v): i for i, v in enumerate(values)}
            xs = np.array([position[_fmt(t["params"][key])] for t in done], dtype=float)
            ax.set_xticks(range(len(values)), [_fmt(v) for v in values], rotation=45 if len(values) > 4 else 0)
            ax.set_xlim(-0.5, len(values) - 0.5)
            best_x = position[_fmt(best["params"][key])]
            tops = [(i, max(t["value"] for t, x in zip(done, xs, strict=True) if x == i))
                    for i in range(len(values)) if (xs == i).any()]
            ax.plot([i for i, _ in tops], [v for _, v in tops], color="#0b5cad", lw=1, alpha=0.6)
        else:
            xs = np.array([t["params"][key] for t in done], dtype=float)
            if values.get("log"):
                ax.set_xscale("log")
            best_x = best["params"][key]
        jitter = np.linspace(-0.12, 0.12, len(done)) if isinstance(values, list) and len(done) > 1 else 0
        ax.scatter(xs + jitter, [t["value"] for t in done], s=14, color="#5b6474", alpha=0.75, zorder=2)
        ax.scatter([best_x], [best["value"]], s=70, facecolors="none", edgecolors="#c0392b", lw=1.5, zorder=3)
        ax.set_xlabel(key)
        ax.grid(alpha=0.25)
    axes[0][0].set_ylabel(f"{metric} (validation)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def tuning_rows(studies: list[dict[str, Any]], figures: bool = True) -> list[dict[str, Any]]:
    """Per study (one method on one cohort): what the report and the summary show.

    Args:
        studies: `study.json` records.
        figures: draw the score-by-hyperparameter figure (the summary page shows none).
    """
    rows = []
    for s in studies:
        trials = s.get("trials", [])
        counted = [t for t in trials if t.get("counted")]
        selected = s.get("selected")
        row = {
            "method": s["method"], "budget": s["budget"], "target": s.get("target", s["budget"]),
            "grid_size": s.get("grid_size"), "sampler": s["sampler"], "pruner": s["pruner"],
            "metric": s.get("metric"), "space": describe_space(s["space"]), "sources": s.get("sources", []),
            "fixed": s.get("fixed_options", {}), "trial_epochs": s.get("trial_epochs"),
            "trials": len(counted),
            "complete": sum(t["state"] == "COMPLETE" for t in counted),
            "pruned": sum(t["state"] == "PRUNED" for t in counted),
            "failed": sum(t["state"] == "FAIL" for t in counted),
            "retried": sum(1 for t in trials if t.get("retry_of") is not None),
            "selected": None if selected is None else {
                "trial": selected["number"], "value": selected["value"],
                "params": {k: _fmt(v) for k, v in selected["params"].items()}},
            "figure": None,
        }
        if figures and s["budget"] and selected is not None:
            row["figure"] = score_by_hyperparameter_figure(
                trials, s["space"], s.get("metric") or "score", f"{s['method']}: validation score by hyperparameter")
        rows.append(row)
    return rows

"""Figures for the report, returned as base64 PNG strings (embedded, so the HTML is self-contained)."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .figure_style import drawn_with  # noqa: E402


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


# Sizes chosen so that the PNGs, shown at their native width (about 640 px), keep
# text at 10-11 pt: legible at 100 % zoom without enlarging the page.
STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
         "xtick.labelsize": 9, "ytick.labelsize": 9}
DPI = 100


_styled = drawn_with(STYLE)  # this module's sizes, whatever else is imported


@_styled
def reliability_figure(curves: dict[str, list[dict]], histograms: dict[str, dict] | None = None,
                       title: str = "Reliability (all labels pooled)") -> str:
    """Reliability diagram (quantile bins; marker area grows with the bin's count) over a histogram of
    predicted risk, per method. curves: method -> reliability bins; histograms: method -> {edges, counts}."""
    histograms = histograms or {}
    fig, (ax, ax_h) = plt.subplots(2, 1, figsize=(5.0, 6.0), height_ratios=[3, 1.3], sharex=True)
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1, label="perfect calibration")
    for method, bins in curves.items():
        ax.plot([b["mean_predicted"] for b in bins], [b["observed"] for b in bins], marker="o", ms=4, lw=1.3,
                label=method)
        if method in histograms:
            h = histograms[method]
            ax_h.stairs(h["counts"], h["edges"], lw=1.3, label=method)
    # zoom to where the predictions are (a rare outcome's risks all sit near 0), in steps of 0.1
    top = max([b["upper"] for bins in curves.values() for b in bins] + [b["observed"] for bins in curves.values()
                                                                          for b in bins] + [0.1])
    limit = min(1.0, np.ceil(top * 10 + 1e-9) / 10)
    ax.set(ylabel="observed frequency", xlim=(0, limit), ylim=(0, limit), title=title)
    ax_h.set(xlabel="predicted probability", ylabel="predictions")
    ax.legend(loc="upper left", frameon=False)
    return _png(fig)


@_styled
def decision_curve_figure(curves: dict[str, dict[str, list[float]]], label: str) -> str:
    """Net benefit vs threshold probability per method, with "treat all" and "treat none".

    curves: method -> evaluation.operating.net_benefit output (same thresholds for all methods).
    """
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    first = next(iter(curves.values()))
    t = np.asarray(first["threshold"])
    for method, c in curves.items():
        ax.plot(t, c["model"], lw=1.5, label=method)
    ax.plot(t, first["treat_all"], c="grey", lw=1, ls="--", label="treat all")
    ax.axhline(0, c="black", lw=0.8, label="treat none")
    top = max(max(max(c["model"]) for c in curves.values()), max(first["treat_all"]), 0.01)
    ax.set(xlabel="threshold probability", ylabel="net benefit", xlim=(0, float(t.max())),
           ylim=(-0.25 * top, 1.15 * top), title=f"Decision curve: {label}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    return _png(fig)


@_styled
def forest_figure(rows: list[dict], baseline: str, method: str, metric: str = "AUPRC", unit: str = "label",
                  n_seeds: int = 1) -> str:
    """Per-label difference (method - baseline) with its unadjusted paired-bootstrap 95 % CI; a line at 0.

    rows: {label, difference, ci: [low, high] or None, significant_holm (optional)}; labels without a
    difference are left out. A filled marker: significant after Holm's adjustment over the labels; hollow: not.
    """
    rows = [r for r in rows if r["difference"] is not None]
    fig, ax = plt.subplots(figsize=(5.2, 1.3 + 0.26 * max(len(rows), 1)))
    y = np.arange(len(rows))[::-1]
    for yy, r in zip(y, rows, strict=True):
        ci = r.get("ci") or [None, None]
        if ci[0] is not None:
            ax.plot(ci, [yy, yy], c="#4a6fa5", lw=1.6)
        filled = r.get("significant_holm", False)
        ax.plot(r["difference"], yy, "o", c="#1d3b6a", ms=4.5, mfc="#1d3b6a" if filled else "white")
    ax.axvline(0, c="grey", ls=":", lw=1)
    ax.set_yticks(y, [r["label"] for r in rows])
    seeds = f"{n_seeds} seed{'s' if n_seeds != 1 else ''}"
    ax.set(xlabel=f"{metric} difference: {method} - {baseline} (95% CI, unadjusted)\n"
                  f"filled: significant after Holm over {len(rows)} {unit}s; {seeds}",
           ylim=(-0.7, len(rows) - 0.3))
    ax.set_title(f"{method} - {baseline}, per {unit} (test)")
    return _png(fig)

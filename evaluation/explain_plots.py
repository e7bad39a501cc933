"""Figures of the explanations: modality reliance per label, and each shown case's maps.

Every function takes plain arrays and returns PNG bytes.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .figure_style import drawn_with  # noqa: E402

STYLE = {"font.size": 8, "axes.titlesize": 9, "legend.fontsize": 8}
_styled = drawn_with(STYLE)


def _png(fig, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


@_styled
def reliance_figure(labels: list[str], shares: dict[str, dict[str, np.ndarray]], modality: str,
                    level: float) -> bytes:
    """One row per label: each method's share of `modality` (dot) with its patient-bootstrap CI (bar).

    Args:
        labels: the K labels, top to bottom.
        shares: method -> {"share", "ci_low", "ci_high"}: `[K]` arrays for `modality`.
        modality: the modality whose share is plotted (the others make up the rest of 1).
    """
    methods = list(shares)
    k = len(labels)
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.32 * k * max(1, len(methods) / 3)))
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    offsets = np.linspace(-0.3, 0.3, len(methods)) if len(methods) > 1 else np.zeros(1)
    for i, m in enumerate(methods):
        s = shares[m]
        y = np.arange(k) + offsets[i]
        err = np.vstack([np.clip(s["share"] - s["ci_low"], 0, None), np.clip(s["ci_high"] - s["share"], 0, None)])
        ax.errorbar(s["share"], y, xerr=np.nan_to_num(err), fmt="o", ms=4, color=cycle[i % len(cycle)],
                    capsize=2, lw=1, label=m)
    ax.set_yticks(np.arange(k))
    ax.set_yticklabels([lab if len(lab) <= 48 else lab[:45] + "..." for lab in labels])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.axvline(0.5, color="#bbbbbb", lw=0.8, ls=":")
    ax.set_xlabel(f"{modality.upper()} share of mean |Shapley contribution| (probability scale; "
                  f"bars: {level:.0%} patient-bootstrap CI)")
    ax.legend(loc="lower right", ncol=min(len(methods), 4), frameon=False, bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


@_styled
def cases_figure(panels: list[dict]) -> bytes:
    """One column per case: the film with its Grad-CAM overlay (top) and the variable x hour IG map (bottom).

    Args:
        panels: per case {"title", "image": `[H, W]` in [0, 1] or None, "cam": `[H, W]` or None,
            "heatmap": `[V, T]` or None, "variables": V names}.
    """
    n = len(panels)
    rows = int(any(p.get("image") is not None for p in panels)) + int(any(p.get("heatmap") is not None
                                                                          for p in panels))
    rows = max(rows, 1)
    fig, axes = plt.subplots(rows, n, figsize=(3.0 * n, 2.9 * rows), squeeze=False)
    for j, p in enumerate(panels):
        r = 0
        if any(q.get("image") is not None for q in panels):
            ax = axes[r, j]
            if p.get("image") is not None:
                ax.imshow(p["image"], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                if p.get("cam") is not None and np.nanmax(p["cam"]) > 0:
                    cam = p["cam"] / np.nanmax(p["cam"])  # opacity follows the map: no colour where it is 0
                    ax.imshow(cam, cmap="inferno", alpha=0.6 * cam, vmin=0, vmax=1, interpolation="nearest")
                ax.set_title(p["title"] + f"\n{p['image'].shape[0]}x{p['image'].shape[1]} px, Grad-CAM")
            ax.axis("off")
            r += 1
        if r < rows:
            ax = axes[r, j]
            if p.get("heatmap") is not None:
                h = np.asarray(p["heatmap"])
                lim = float(np.nanmax(np.abs(h))) or 1.0
                ax.imshow(h, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
                ax.set_yticks(np.arange(len(p["variables"])))
                ax.set_yticklabels(p["variables"], fontsize=6)
                ax.set_xlabel("hour after ICU admission")
                ax.set_title("IG: red raises, blue lowers the risk" if r else p["title"])
            else:
                ax.axis("off")
    fig.subplots_adjust(wspace=0.35, hspace=0.45)
    return _png(fig, dpi=72)

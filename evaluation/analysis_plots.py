"""Figures of the "why" analyses (flatness, landscapes, alignment, probes, noise, sensitivity, efficiency).

Every function takes plain numbers and returns PNG bytes; axes carry labels with units
and every multi-series figure a legend. Methods keep one colour across figures.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .figure_style import drawn_with  # noqa: E402

# Text sizes of these figures (smaller than the report's own: they hold more panels).
STYLE = {"font.size": 9, "axes.titlesize": 10, "legend.fontsize": 8}


_styled = drawn_with(STYLE)  # this module's sizes, whatever else is imported


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _colors(methods: list[str]) -> dict[str, str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {m: cycle[i % len(cycle)] for i, m in enumerate(methods)}


@_styled
def flatness_figure(rows: list[dict]) -> bytes:
    """Per-encoder Hessian trace / #params (+-1 SE) and top eigenvalue, bars per method.

    rows: {method, encoder, trace_per_param, se_per_param, eigenvalue, eigenvalue_status}; an
    eigenvalue whose status is not "ok" (negative, not converged) gets no bar, only its status.
    """
    methods = list(dict.fromkeys(r["method"] for r in rows))
    encoders = list(dict.fromkeys(r["encoder"] for r in rows))
    colors, width = _colors(methods), 0.8 / max(len(methods), 1)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for i, m in enumerate(methods):
        by = {r["encoder"]: r for r in rows if r["method"] == m}
        x = np.arange(len(encoders)) + (i - (len(methods) - 1) / 2) * width
        axes[0].bar(x, [by[e]["trace_per_param"] if e in by else np.nan for e in encoders], width,
                    yerr=[by[e]["se_per_param"] or 0 if e in by else 0 for e in encoders], capsize=3,
                    color=colors[m], label=m)
        # only converged, non-negative eigenvalues are sharpness; the others are labelled where their bar would be
        ok = [e in by and by[e].get("eigenvalue_status", "ok") == "ok" for e in encoders]
        axes[1].bar(x, [by[e]["eigenvalue"] if good else np.nan for e, good in zip(encoders, ok, strict=True)], width,
                    color=colors[m], label=m)
        for xi, e, good in zip(x, encoders, ok, strict=True):
            if e in by and not good:
                axes[1].text(xi, 0, " " + by[e]["eigenvalue_status"], rotation=90, ha="center", va="bottom",
                             fontsize=7, color=colors[m])
    for ax in axes:
        ax.set_xticks(np.arange(len(encoders)), encoders)
        ax.set_xlabel("encoder")
        ax.axhline(0, c="grey", lw=0.6)
    axes[0].set(ylabel="Hessian trace / #parameters", title="Sharpness: Hutchinson trace (±1 SE)")
    axes[1].set(ylabel="top Hessian eigenvalue", title="Sharpness: top eigenvalue (power iteration)")
    axes[0].legend(title="method")
    return _png(fig)


@_styled
def landscape_1d_figure(curves: dict[str, dict[str, dict[str, list[float]]]], alphas: list[float]) -> bytes:
    """Loss along one filter-normalised direction; one panel per scope, solid = train, dashed = test.

    curves: scope -> method -> {"train": [A], "test": [A]}.
    """
    scopes = list(curves)
    methods = list(dict.fromkeys(m for s in scopes for m in curves[s]))
    colors = _colors(methods)
    fig, axes = plt.subplots(1, len(scopes), figsize=(4.2 * len(scopes), 3.4), squeeze=False,
                             constrained_layout=True)
    for ax, scope in zip(axes[0], scopes, strict=True):
        for m, c in curves[scope].items():
            ax.plot(alphas, c["train"], c=colors[m], label=f"{m} (train)")
            ax.plot(alphas, c["test"], c=colors[m], ls="--", label=f"{m} (test)")
        ax.set(xlabel="α (filter-normalised units)", title=f"1D landscape: {scope}")
    axes[0][0].set_ylabel("loss (nats)")
    axes[0][0].legend(fontsize=7)
    return _png(fig)


@_styled
def landscape_2d_figure(grids: dict[str, dict[str, list[list[float]]]], alphas: list[float], betas: list[float],
                        split: str) -> bytes:
    """Contours of the loss over two filter-normalised directions; rows = scope, columns = method.

    grids: scope -> method -> `[A, B]` losses. One colour scale per row, so methods compare.
    """
    scopes = list(grids)
    methods = list(dict.fromkeys(m for s in scopes for m in grids[s]))
    fig, axes = plt.subplots(len(scopes), len(methods), figsize=(3.3 * len(methods) + 1, 3.0 * len(scopes)),
                             squeeze=False, constrained_layout=True)
    b, a = np.meshgrid(betas, alphas)
    for i, scope in enumerate(scopes):
        values = np.array([grids[scope][m] for m in methods if m in grids[scope]])
        levels = np.linspace(np.nanmin(values), np.nanmax(values), 12) if values.size else 12
        for j, m in enumerate(methods):
            ax = axes[i][j]
            if m not in grids[scope]:
                ax.axis("off")
                continue
            cs = ax.contourf(a, b, np.array(grids[scope][m]), levels=levels, cmap="viridis")
            ax.plot(0, 0, "r+", ms=8)
            ax.set(title=f"{m}: {scope}")
            if i == len(scopes) - 1:
                ax.set_xlabel("α (direction 1)")
            if j == 0:
                ax.set_ylabel("β (direction 2)")
        fig.colorbar(cs, ax=list(axes[i]), label=f"{split} loss (nats)", format="%.3g")
    fig.suptitle(f"2D loss landscape ({split} split); + marks the trained weights")
    return _png(fig)


@_styled
def landscape_surface_figure(grids: dict[str, list[list[float]]], alphas: list[float], betas: list[float],
                             title: str) -> bytes:
    """3D surfaces of the loss over two directions, one panel per method (same z range)."""
    methods = list(grids)
    fig = plt.figure(figsize=(4.4 * len(methods), 3.6))
    b, a = np.meshgrid(betas, alphas)
    zmin = min(np.nanmin(g) for g in grids.values())
    zmax = max(np.nanmax(g) for g in grids.values())
    for j, m in enumerate(methods):
        ax = fig.add_subplot(1, len(methods), j + 1, projection="3d")
        ax.plot_surface(a, b, np.array(grids[m]), cmap="viridis", vmin=zmin, vmax=zmax)
        ax.set(title=m, xlabel="α", ylabel="β", zlim=(zmin, zmax))
        ax.set_zlabel("loss (nats)", labelpad=2)
    fig.suptitle(title)
    return _png(fig)


@_styled
def alignment_figure(series: dict[str, list[dict]]) -> bytes:
    """gamma_m = cos(g_fuse,m, g_uni,m) over training steps; one panel per method, one line per modality.

    series: method -> [{"step": s, m: gamma, ...}].
    """
    methods = list(series)
    fig, axes = plt.subplots(1, len(methods), figsize=(3.4 * len(methods), 3.0), squeeze=False, sharey=True)
    for ax, m in zip(axes[0], methods, strict=True):
        records = series[m]
        mods = [k for k in records[0] if k != "step"] if records else []
        for mod in mods:
            ax.plot([r["step"] for r in records], [r.get(mod) for r in records], label=mod)
        ax.axhline(0, c="grey", lw=0.6)
        ax.set(title=m, xlabel="optimizer step", ylim=(-1.05, 1.05))
        ax.legend(title="modality")
    axes[0][0].set_ylabel("γ_m = cos(∇L_fuse, ∇L_m)")
    return _png(fig)


@_styled
def probe_figure(rows: list[dict], metric: str) -> bytes:
    """Linear-probe test score per modality: bars per method, the unimodal baseline as a line.

    rows: {modality, method, score, baseline (or None)}.
    """
    mods = list(dict.fromkeys(r["modality"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    colors = _colors(methods)
    fig, axes = plt.subplots(1, len(mods), figsize=(3.6 * len(mods), 3.2), squeeze=False)
    for ax, mod in zip(axes[0], mods, strict=True):
        sub = [r for r in rows if r["modality"] == mod]
        ax.bar([r["method"] for r in sub], [r["score"] for r in sub], color=[colors[r["method"]] for r in sub])
        base = next((r["baseline"] for r in sub if r.get("baseline") is not None), None)
        if base is not None:
            ax.axhline(base, c="k", ls="--", lw=1, label="unimodal baseline (trained alone)")
            ax.legend(loc="lower right")
        note = "" if base is not None else "\n(no unimodal baseline run)"
        ax.set(title=f"{mod} encoder, linear probe{note}", ylabel=f"test {metric}", xlabel="method")
        ax.tick_params(axis="x", rotation=30)
    return _png(fig)


@_styled
def metric_vs_figure(series: dict[str, list[tuple[float, float, float]]], xlabel: str, metric: str,
                     title: str) -> bytes:
    """Metric (mean +- std over seeds) against one setting; one line per method.

    series: method -> [(x, mean, std)].
    """
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    for m, points in series.items():
        points = sorted(points)
        ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points], marker="o",
                    capsize=3, label=m)
    ax.set(xlabel=xlabel, ylabel=f"test {metric}", title=title)
    ax.legend(title="method")
    return _png(fig)


@_styled
def sensitivity_figure(panels: dict[str, list[tuple[float, float, float]]], metric: str, method: str) -> bytes:
    """Metric (mean +- std over seeds) against each option (alpha, beta, rho), one panel each."""
    names = list(panels)
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.0), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], names, strict=True):
        pts = sorted(panels[name])
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3)
        ax.set(xlabel=f"{name} (option value)", title=f"{method}: {name}")
    axes[0][0].set_ylabel(f"test {metric}")
    return _png(fig)


@_styled
def efficiency_figure(rows: dict[str, dict], device: str) -> bytes:
    """Step time and inference time per sample (bar: median; whisker: quartiles) and peak memory per method.

    rows: method -> pipeline.efficiency.measure_methods row ("step_ms" and "inference_ms_per_sample" are
    `evaluation.efficiency.spread` dicts, "peak_memory_mib" a number).
    """
    methods = list(rows)
    colors = _colors(methods)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), constrained_layout=True)
    for ax, key, title in zip(axes[:2], ("step_ms", "inference_ms_per_sample"),
                              ("training step (median, IQR)", "inference per sample (median, IQR)"), strict=True):
        med = np.array([rows[m][key]["median"] for m in methods])
        err = np.array([[med[i] - rows[m][key]["q1"], rows[m][key]["q3"] - med[i]] for i, m in enumerate(methods)]).T
        ax.bar(methods, med, yerr=err, capsize=3, color=[colors[m] for m in methods])
        ax.set(ylabel="ms", title=title)
    axes[2].bar(methods, [rows[m]["peak_memory_mib"] for m in methods], color=[colors[m] for m in methods])
    axes[2].set(ylabel="MiB", title="peak tensor memory")
    for ax in axes:
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(f"Efficiency on {device} (same model and batch)")
    return _png(fig)


@_styled
def dominance_figure(series: dict[str, list[dict]]) -> bytes:
    """MASAM's dominant modality per epoch: share of steps each modality was dominant (top) and mean APS (bottom).

    series: method -> evaluation.dominance.dominance_series output.
    """
    methods = list(series)
    fig, axes = plt.subplots(2, len(methods), figsize=(3.8 * len(methods), 4.6), squeeze=False, sharex="col")
    for col, method in enumerate(methods):
        records = series[method]
        epochs = [r["epoch"] for r in records]
        mods = list(records[0]["share"]) if records else []
        bottom = np.zeros(len(records))
        for mod in mods:
            share = np.array([r["share"][mod] for r in records])
            axes[0][col].bar(epochs, share, bottom=bottom, label=mod)
            bottom += share
            aps = [np.nan if r["aps"].get(mod) is None else r["aps"][mod] for r in records]
            axes[1][col].plot(epochs, aps, marker="o", ms=3, label=mod)
        axes[0][col].set(title=f"{method}: dominant modality", ylabel="share of steps", ylim=(0, 1))
        axes[0][col].legend(title="dominant", fontsize=7)
        axes[1][col].set(xlabel="epoch", ylabel="mean APS")
    return _png(fig)

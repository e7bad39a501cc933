"""PR and ROC curves of one label as inline SVG (vector, text in the page's own font).

One small multiple per label: a report holds every label's curves (25 phenotypes x
every method) without rendering 25 raster figures, and the text stays legible at any
zoom. The legend is HTML under the plot, so it never covers a curve; it gives AP and
AUROC per method, as scikit-learn's PrecisionRecallDisplay / RocCurveDisplay do.
Precision-recall is drawn step-wise (scikit-learn's `drawstyle="steps-post"`), the
curve that average precision integrates; points closer than half a pixel are merged.
"""

from __future__ import annotations

from html import escape

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

# matplotlib's tab10, so colours match the raster figures of the same report
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]
DASHES = ["", "6 3", "2 2", "8 3 2 3"]  # cycled after the ten colours, so 40 methods stay distinguishable
SIZE = 185  # plot area, px
LEFT, TOP, GAP, BOTTOM = 46, 24, 58, 40


def style(i: int) -> tuple[str, str]:
    """(colour, dash pattern) of the i-th method."""
    return PALETTE[i % len(PALETTE)], DASHES[(i // len(PALETTE)) % len(DASHES)]


def _path(x: np.ndarray, y: np.ndarray, x0: float, steps: bool) -> str:
    """SVG path in pixels of a curve on [0, 1]^2 whose panel starts at x0; `steps`: horizontal then vertical."""
    px = np.round(x0 + np.asarray(x, float) * SIZE, 1)
    py = np.round(TOP + (1 - np.asarray(y, float)) * SIZE, 1)
    if steps:  # (x_i, y_i) -> (x_{i+1}, y_i) -> (x_{i+1}, y_{i+1})
        px = np.repeat(px, 2)[1:]
        py = np.repeat(py, 2)[:-1]
    keep = np.r_[True, (np.abs(np.diff(px)) >= 0.5) | (np.abs(np.diff(py)) >= 0.5)]
    px, py = px[keep], py[keep]
    return "M" + " L".join(f"{a:g},{b:g}" for a, b in zip(px, py, strict=True))


def _axes(x0: float, title: str, xlabel: str, ylabel: str) -> list[str]:
    out = [f'<rect x="{x0}" y="{TOP}" width="{SIZE}" height="{SIZE}" fill="#fff" stroke="#9aa3b2"/>']
    for t in np.linspace(0, 1, 6):
        gx, gy = x0 + t * SIZE, TOP + (1 - t) * SIZE
        out.append(f'<line x1="{gx:g}" y1="{TOP}" x2="{gx:g}" y2="{TOP + SIZE}" stroke="#eef0f4"/>')
        out.append(f'<line x1="{x0}" y1="{gy:g}" x2="{x0 + SIZE}" y2="{gy:g}" stroke="#eef0f4"/>')
        out.append(f'<text x="{gx:g}" y="{TOP + SIZE + 14}" text-anchor="middle">{t:.1f}</text>')
        out.append(f'<text x="{x0 - 5}" y="{gy + 4:g}" text-anchor="end">{t:.1f}</text>')
    out.append(f'<text x="{x0 + SIZE / 2}" y="{TOP - 8}" text-anchor="middle" font-weight="600">{title}</text>')
    out.append(f'<text x="{x0 + SIZE / 2}" y="{TOP + SIZE + 32}" text-anchor="middle">{xlabel}</text>')
    out.append(f'<text transform="translate({x0 - 34},{TOP + SIZE / 2}) rotate(-90)" '
               f'text-anchor="middle">{ylabel}</text>')
    return out


def curve_svg(label: str, curves: dict[str, tuple[np.ndarray, np.ndarray]], prevalence: float) -> str:
    """HTML (an <svg> and its legend table) with the PR and ROC curves of one label, one line per method.

    Args:
        label: the label's name (escaped here).
        curves: method -> (y_true `[N]` 0/1, y_score `[N]`); every method scored on the same samples.
        prevalence: share of positives (the PR chance line).
    """
    x_pr, x_roc = LEFT, LEFT + SIZE + GAP
    width, height = x_roc + SIZE + 12, TOP + SIZE + BOTTOM + 4
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-size="12" role="img" '
             f'aria-label="precision-recall and ROC curves: {escape(label)}">']
    parts += _axes(x_pr, "Precision-recall", "recall (sensitivity)", "precision (PPV)")
    parts += _axes(x_roc, "ROC", "1 − specificity", "sensitivity")
    chance_y = TOP + (1 - prevalence) * SIZE
    parts.append(f'<line x1="{x_pr}" y1="{chance_y:g}" x2="{x_pr + SIZE}" y2="{chance_y:g}" stroke="#888" '
                 f'stroke-dasharray="2 3"/>')
    parts.append(f'<line x1="{x_roc}" y1="{TOP + SIZE}" x2="{x_roc + SIZE}" y2="{TOP}" stroke="#888" '
                 f'stroke-dasharray="2 3"/>')
    legend = []
    for i, (method, (y, s)) in enumerate(curves.items()):
        colour, dash = style(i)
        stroke = f'fill="none" stroke="{colour}" stroke-width="1.6"' + (f' stroke-dasharray="{dash}"' if dash else "")
        precision, recall, _ = precision_recall_curve(y, s)
        fpr, tpr, _ = roc_curve(y, s)
        parts.append(f'<path d="{_path(recall, precision, x_pr, True)}" {stroke}/>')
        parts.append(f'<path d="{_path(fpr, tpr, x_roc, False)}" {stroke}/>')
        swatch = (f'<svg width="22" height="8"><line x1="0" y1="4" x2="22" y2="4" stroke="{colour}" '
                  f'stroke-width="2"{f" stroke-dasharray={chr(34)}{dash}{chr(34)}" if dash else ""}/></svg>')
        legend.append(f"<tr><td>{swatch} {escape(method)}</td><td>{average_precision_score(y, s):.3f}</td>"
                      f"<td>{roc_auc_score(y, s):.3f}</td></tr>")
    parts.append("</svg>")
    legend.append(f'<tr class="muted"><td>chance (dotted)</td><td>{prevalence:.3f}</td><td>0.500</td></tr>')
    return ("".join(parts) + '<div class="scroll"><table class="legend"><thead><tr><th>method</th><th>AP</th><th>AUROC</th></tr></thead>'
            f"<tbody>{''.join(legend)}</tbody></table></div>")

"""Each figure module draws with its own text sizes, whatever else was imported or set globally.

The report once drew its figures with the analysis figures' smaller fonts, only because the
report stage imported the analysis code, whose module set matplotlib's global rcParams.
"""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt

from clinfuse.evaluation import analysis_plots, plots

RELIABILITY = {"masam": [{"mean_predicted": 0.1, "observed": 0.12, "upper": 0.3, "count": 30},
                         {"mean_predicted": 0.5, "observed": 0.45, "upper": 0.7, "count": 20}]}
NOISE = {"masam": [(0.0, 0.40, 0.01), (0.2, 0.35, 0.02)]}


def test_importing_the_figure_modules_leaves_matplotlib_global_settings_alone():
    for key in ("font.size", "axes.titlesize", "legend.fontsize", "axes.labelsize"):
        assert plt.rcParams[key] == matplotlib.rcParamsDefault[key], key


def test_a_report_figure_is_the_same_under_other_global_font_settings():
    first = plots.reliability_figure(RELIABILITY, title="Reliability")
    with plt.rc_context({"font.size": 20, "axes.titlesize": 24, "legend.fontsize": 18}):
        again = plots.reliability_figure(RELIABILITY, title="Reliability")
    assert again == first


def test_an_analysis_figure_is_the_same_under_other_global_font_settings():
    first = analysis_plots.metric_vs_figure(NOISE, "noise rate", "macro_auprc", "Label noise")
    with plt.rc_context({"font.size": 20, "axes.titlesize": 24, "legend.fontsize": 18}):
        again = analysis_plots.metric_vs_figure(NOISE, "noise rate", "macro_auprc", "Label noise")
    assert again == first

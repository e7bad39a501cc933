"""Layout of the HTML report: wide tables scroll inside their own container, never the page.

The structural test always runs. The browser tests render the page in headless Chromium
at 1024 and 1400 px and as printed (A4 landscape, print-to-PDF) and measure it; they run where a
`chromium` (Debian package `chromium`; CI's .ci/run installs it) or `chromium-browser`/`google-chrome`
binary is on PATH and are skipped, saying so, elsewhere.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

from clinfuse.evaluation.report import LabelRow, ReportData, render_report
from clinfuse.evaluation.svg import curve_svg

METHODS = ["late_fusion", "unimodal", "sam", "masam", "masam_reference", "igm", "ogm_ge", "agm", "gblend", "inforeg",
           "mla", "mmpareto"]
LABELS = ["Pneumonia (except that caused by tuberculosis or sexually transmitted disease)", "Shock",
          "Hypertension with complications and secondary hypertension", "Septicemia (except in labor)"]


def wide_report(methods: list[str] = METHODS) -> ReportData:
    """A report with twelve methods (by default): its per-label table is far wider than any screen."""
    ci = {"auprc": 0.4123, "auprc_ci": [0.3011, 0.5234], "auroc": 0.7765, "auroc_ci": [0.7012, 0.8421]}
    rows = [LabelRow(lab, 0.2105, 24, {m: ci for m in methods}, "masam") for lab in LABELS]
    rng = np.random.default_rng(0)
    y = (rng.random(60) < 0.3).astype(int)
    curves = [(LABELS[1], curve_svg(LABELS[1], {m: (y, rng.random(60) + 0.3 * y) for m in methods}, 0.3))]
    runs = [{"method": m, "seed": 42, "run": f"{m}-s42", "val_metric": "val_macro_auprc", "val": 0.4, "best_epoch": 3,
             "test": 0.41, "mlflow_run_id": "0123456789abcdef0123456789abcdef", "champion": m == "masam",
             "best_of_method": True} for m in methods]
    return ReportData(
        title="wide", dataset="mimic", task="phenotype", task_type="multilabel", headline_metric="macro_auprc",
        methods=methods, cohort_counts={"train": 10, "val": 2, "test": 4}, exclusions=[],
        prevalence={"train": {lab: 0.2105 for lab in LABELS}, "test": {lab: 0.2105 for lab in LABELS}},
        label_rows=rows, excluded_labels=[],
        comparison=[{"method": m, "n_seeds": 1, "headline_mean": 0.41, "headline_std": None, "auroc_mean": 0.77,
                     "auroc_std": None, "rank_auprc": 2.0, "rank_auroc": 2.0} for m in methods],
        paired_difference=None, calibration=[{"method": m, "brier": 0.1, "slope": 0.9, "intercept": 0.1}
                                             for m in methods],
        subgroups=[], n_resamples=1000, settings={"bootstrap resamples": 1000, "min subgroup patients": 10},
        champion={"method": "masam", "seed": 42, "value": 0.41, "ci": [0.3, 0.5]}, runs=runs,
        provenance={"commit": "f" * 40, "dirty": False, "changed_files": 0,
                    "command": "clinfuse report --cohort " + "/very/long/path" * 12 + " --out reports/x",
                    "registry": {"name": "mimic-phenotype", "version": None, "note": "not registered yet"}},
        curves=curves,
    )


class Containers(HTMLParser):
    """For every <table>: whether an enclosing element has the class `scroll`."""

    VOID = {"img", "br", "meta", "link", "input", "hr", "line", "path", "rect"}

    def __init__(self):
        super().__init__()
        self.stack: list[set[str]] = []
        self.tables: list[tuple[str | None, bool]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append((a.get("id"), any("scroll" in classes for classes in self.stack)))
        if tag not in self.VOID:
            self.stack.append(set((a.get("class") or "").split()))

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        if tag not in self.VOID and self.stack:
            self.stack.pop()


def test_every_table_sits_in_a_horizontal_scroll_container():
    html = render_report(wide_report())
    parser = Containers()
    parser.feed(html)
    assert len(parser.tables) >= 8
    assert [t for t, inside in parser.tables if not inside] == []
    assert re.search(r"\.scroll\s*\{[^}]*overflow-x:\s*auto", html)


def test_one_seed_reads_n_a_in_the_comparison_table():
    html = render_report(wide_report())
    assert "n/a (1 seed)" in html and "± 0.000" not in html


def _browser() -> str | None:
    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


MEASURE = """<script>
(function () {
  var vw = document.documentElement.clientWidth, out = [], wider = 0, cut = [], hidden = {};
  document.querySelectorAll("table").forEach(function (t) {
    var box = t.parentElement.getBoundingClientRect();
    if (t.getBoundingClientRect().width > vw) { wider += 1; }
    if (box.right > vw + 0.5 || box.left < -0.5) { out.push(t.id || "table"); }
    // cut: columns outside the visible part of the table's container (reachable only by scrolling it)
    if (t.getBoundingClientRect().right > box.right + 0.5) { cut.push(t.id || "table"); }
    var heads = [];
    t.querySelectorAll("thead th").forEach(function (th) {
      if (th.getBoundingClientRect().right > box.right + 0.5) { heads.push(th.textContent.trim()); }
    });
    hidden[t.id || "table"] = heads;
  });
  document.body.setAttribute("data-layout", JSON.stringify(
    {viewport: vw, page: document.documentElement.scrollWidth, overflowing: out, wider_than_page: wider,
     cut: cut, hidden_columns: hidden}));
})();
</script>"""


def _measure(browser: str, html: str, tmp_path, width: int) -> dict:
    page = tmp_path / f"report-{width}.html"
    page.write_text(html.replace("</main></body>", "</main>" + MEASURE + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={width},2000"]
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'data-layout="([^"]*)"', dom.stdout)
    assert found, f"{browser} rendered nothing measurable: {dom.stderr[-500:]}"
    shot = tmp_path / f"report-{width}.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 0
    return json.loads(found.group(1).replace("&quot;", '"'))


@pytest.mark.skipif(_browser() is None, reason="no headless Chromium on PATH (Debian: apt-get install chromium)")
def test_at_1024_px_no_table_is_wider_than_the_page(tmp_path):
    browser = _browser()
    html = render_report(wide_report())
    layout = _measure(browser, html, tmp_path, 1024)
    assert layout["wider_than_page"] >= 1  # the twelve-method table really is wider than the screen...
    assert layout["overflowing"] == [] and layout["page"] <= layout["viewport"]  # ...and scrolls in its box
    # the check can fail: without the scroll containers the same page overflows
    broken = html.replace("overflow-x: auto", "overflow-x: visible")
    assert _measure(browser, broken, tmp_path, 1024)["page"] > 1024


def test_adni_sections_show_confusion_matrix_class_rates_and_feature_provenance():
    from clinfuse.evaluation.report_data import _features, _multiclass

    manifest = {"tabular_features": ["AGE", "AGE_missing", "ADAS13", "ADAS13_missing", "TAU", "TAU_missing",
                                     "TAU_censored", "PTGENDER=Female", "PTGENDER=Male"],
                "tabular": {"dropped_missing": {"PIB": 0.9653}},
                "config": {"exclude_features": ["MMSE", "CDRSB"], "max_missing": 0.9, "smc": "cn"},
                "smc_labelled_cn": 7}
    features = _features(manifest)
    assert [u["column"] for u in features["used"]] == ["AGE", "ADAS13", "TAU", "PTGENDER"]
    assert features["kept_scores"] == ["ADAS13"] and features["n_encoded"] == 9
    assert [e["column"] for e in features["excluded"]] == ["MMSE", "CDRSB"]
    assert features["dropped"] == [{"column": "PIB", "reason": "96.5% missing in the training split (limit 90%)"}]
    champion = {"test": {"confusion_matrix": [[6, 22, 0], [2, 26, 1], [0, 9, 16]], "accuracy": 48 / 82},
                "class_rates": {"accuracy": {"value": 48 / 82, "ci": [0.488, 0.683]},
                                "per_class": {c: {"sensitivity": {"value": 0.5, "ci": [0.4, 0.6]},
                                                  "specificity": {"value": 0.9, "ci": [0.8, 0.95]}, "n_pos": 28}
                                              for c in ("CN", "MCI", "AD")}}}
    data = wide_report()
    data.task_type, data.multiclass, data.features = "multiclass", _multiclass(champion, ["CN", "MCI", "AD"]), features
    html = render_report(data)
    for table in ("confusion-counts", "confusion-normalised", "class-rates", "features"):
        assert f'<table id="{table}">' in html
    assert "0.214" in html  # 6 / 28, the CN row of the row-normalised matrix
    assert "7 subjects with baseline diagnosis SMC" in html and "Kept, judge for yourself:" in html
    assert "0.585 (0.488 to 0.683)" in html


def test_a_method_whose_slope_is_not_estimable_shows_why_instead_of_a_number():
    data = wide_report()
    data.calibration[0] = {"method": METHODS[0], "brier": 0.1, "slope": None, "intercept": None,
                           "slope_note": "not estimable: classes separated"}
    html = render_report(data)
    table = html[html.index('<table id="calibration">'):]
    table = table[: table.index("</table>")]
    first_row = table[table.index("<tbody>"):].split("</tr>")[0]
    assert "not estimable: classes separated" in first_row
    assert "not estimable" not in table.split("</tr>")[2]  # the other methods keep their numbers


# The default sweep (late_fusion, sam, masam) plus the unimodal runs a sweep may add.
DEFAULT_METHODS = ["late_fusion", "unimodal_ehr", "unimodal_cxr", "sam", "masam"]


def default_report() -> ReportData:
    """A report as the default sweep writes it, with the film-withheld (presence) table."""
    data = wide_report(DEFAULT_METHODS)
    ci = [0.3012, 0.5234]
    data.presence = [{"method": m, "image": "CXR", "anchor": "EHR", "paired_n": 1234, "paired_auprc": 0.4123,
                      "paired_auprc_ci": ci, "paired_auroc": 0.7765, "paired_auroc_ci": ci, "absent_n": 2345,
                      "absent_auprc": 0.4123, "absent_auprc_ci": ci, "absent_auroc": 0.7765, "absent_auroc_ci": ci,
                      "withheld_auprc": 0.4012, "withheld_auprc_ci": ci, "difference": -0.0111,
                      "difference_ci": [-0.0312, 0.0101], "p_le_zero": 0.8123} for m in DEFAULT_METHODS]
    return data


@pytest.mark.skipif(_browser() is None, reason="no headless Chromium on PATH (Debian: apt-get install chromium)")
def test_at_1400_px_no_table_of_the_default_sweep_is_cut(tmp_path):
    layout = _measure(_browser(), render_report(default_report()), tmp_path, 1400)
    assert "presence" in layout["hidden_columns"]
    assert layout["cut"] == [], layout["hidden_columns"]
    assert layout["page"] <= layout["viewport"]


@pytest.mark.skipif(_browser() is None, reason="no headless Chromium on PATH (Debian: apt-get install chromium)")
def test_at_1024_px_the_main_results_table_shows_masams_auroc(tmp_path):
    layout = _measure(_browser(), render_report(default_report()), tmp_path, 1024)
    assert layout["hidden_columns"]["per-label"] == []  # "masam AUROC" is the last column
    assert layout["overflowing"] == [] and layout["page"] <= layout["viewport"]


@pytest.mark.skipif(_browser() is None, reason="no headless Chromium on PATH (Debian: apt-get install chromium)")
def test_the_label_column_stays_in_view_while_a_wide_table_scrolls(tmp_path):
    html = render_report(wide_report())
    probe = """<script>
    var box = document.querySelector("#per-label").parentElement; box.scrollLeft = 400;
    var first = document.querySelector("#per-label tbody td").getBoundingClientRect();
    document.body.setAttribute("data-sticky", JSON.stringify(
      {left: first.left, box: box.getBoundingClientRect().left, scrolled: box.scrollLeft}));
    </script>"""
    page = tmp_path / "sticky.html"
    page.write_text(html.replace("</main></body>", "</main>" + probe + "</body>"))
    dom = subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1024,2000",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    found = json.loads(re.search(r'data-sticky="([^"]*)"', dom.stdout).group(1).replace("&quot;", '"'))
    assert found["scrolled"] > 0  # the table did scroll...
    assert abs(found["left"] - found["box"]) < 1  # ...and the label cell stayed at the container's left edge


A4_LANDSCAPE_PX = round((297 - 2 * 12) / 25.4 * 96)  # @page: A4 landscape, 12 mm margins, 96 CSS px per inch


@pytest.mark.skipif(_browser() is None, reason="no headless Chromium on PATH (Debian: apt-get install chromium)")
def test_printed_no_table_is_cut_and_chromium_prints_it_to_pdf(tmp_path):
    browser = _browser()
    html = render_report(default_report())
    assert "@media print" in html
    # the print rules applied at the printed page's width: every table fits the page, none scrolls
    printed = _measure(browser, html.replace("@media print", "@media all"), tmp_path, A4_LANDSCAPE_PX)
    assert printed["cut"] == [] and printed["page"] <= printed["viewport"], printed["hidden_columns"]
    page = tmp_path / "report.html"
    page.write_text(html)
    pdf = tmp_path / "report.pdf"
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
                           f"--print-to-pdf={pdf}", page.as_uri()], capture_output=True, text=True, timeout=180)
    assert pdf.is_file(), done.stderr[-500:]
    body = pdf.read_bytes()
    assert body.startswith(b"%PDF") and body.count(b"/Type /Page") >= 2
    # A4 landscape pages (842 x 595 pt), as @page asks
    assert re.search(rb"/MediaBox \[0 0 841\.9\d* 59[45]\.\d+\]", body), re.findall(rb"/MediaBox[^\]]*\]", body)[:2]

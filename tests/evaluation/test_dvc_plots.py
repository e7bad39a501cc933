"""dvc.yaml's plots: one chart per label and curve, titled with the label, axes on [0, 1], a line per method;
`dvc plots show` writes a page that needs no network (Vega, Vega-Lite and vega-embed inline)."""

from __future__ import annotations

import configparser
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from clinfuse.etl.adni.labels import CLASS_NAMES
from clinfuse.etl.mimic.phenotypes import PHENOTYPE_NAMES
from clinfuse.evaluation.curves import curve_records, curves_by_label
from clinfuse.evaluation.dvc_page import PAGE_TEMPLATE, VENDORED, VENDORED_DIR, page_template
from clinfuse.pipeline.stages.report import slug

ROOT = Path(__file__).resolve().parents[2]
COHORT_LABELS = {"mimic-phenotype": list(PHENOTYPE_NAMES), "mimic-mortality": ["in_hospital_mortality"],
                 "adni": list(CLASS_NAMES)}
DVC = Path(sys.executable).with_name("dvc")
# an http(s) URL in a script's or stylesheet's src/href: what a page would fetch as it loads
FETCHED_URL = re.compile(r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""",
                         re.IGNORECASE)


def _plots() -> dict[str, dict]:
    entries = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    return {path: spec for entry in entries for path, spec in entry.items()}


def test_every_label_has_a_pr_and_a_roc_chart_titled_with_its_name():
    plots = _plots()
    expected = {f"reports/{c}/plots/{kind}/{slug(lab)}.json": lab
                for c, labels in COHORT_LABELS.items() for lab in labels for kind in ("pr", "roc")}
    assert set(plots) == set(expected) and len(plots) == 2 * (25 + 1 + 3)
    for path, label in expected.items():
        assert label in plots[path]["title"], path


def test_curve_templates_fix_both_axes_to_zero_one_draw_pr_stepwise_and_color_each_method():
    templates = {spec["template"] for spec in _plots().values()}
    assert templates == {"evaluation/templates/dvc/pr_curve.json", "evaluation/templates/dvc/roc_curve.json"}
    for template in templates:
        content = json.loads((ROOT / template).read_text())
        for axis in ("x", "y"):
            assert content["encoding"][axis]["scale"]["domain"] == [0, 1]
        assert "<DVC_METRIC_DATA>" in json.dumps(content)
        # the method is the line's color; DVC's own color anchor would color by revision instead
        assert content["encoding"]["color"]["field"] == "method"
        assert "<DVC_METRIC_COLOR>" not in json.dumps(content)
        assert content["$schema"].endswith("/vega-lite/v6.json")  # the vendored Vega-Lite's major version
    pr = json.loads((ROOT / "evaluation/templates/dvc/pr_curve.json").read_text())
    assert pr["mark"]["interpolate"] == "step-before"


def test_curves_by_label_gives_each_label_a_curve_of_every_method_in_sweep_order():
    masam = [{"label": "A", "fpr": 0.0, "tpr": 0.0}, {"label": "A", "fpr": 1.0, "tpr": 1.0},
             {"label": "B", "fpr": 0.0, "tpr": 0.5}]
    late = [{"label": "A", "fpr": 0.0, "tpr": 0.2}, {"label": "B", "fpr": 1.0, "tpr": 1.0}]
    by_label = curves_by_label({"masam": masam, "late_fusion": late}, {"masam": 42, "late_fusion": 7})
    assert list(by_label) == ["A", "B"]
    assert [(r["method"], r["seed"], r["tpr"]) for r in by_label["A"]] == [
        ("masam", 42, 0.0), ("masam", 42, 1.0), ("late_fusion", 7, 0.2)]
    assert [(r["method"], r["tpr"]) for r in by_label["B"]] == [("masam", 0.5), ("late_fusion", 1.0)]
    assert "method" not in masam[0]  # the inputs are left as they were


def test_the_vendored_bundles_are_the_ones_the_readme_names():
    readme = (VENDORED_DIR / "README.md").read_text()
    listed = dict((name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, re.MULTILINE))
    assert set(listed) == set(VENDORED)
    for name in VENDORED:
        assert hashlib.sha256((VENDORED_DIR / name).read_bytes()).hexdigest() == listed[name], name
        stem = name.removesuffix(".min.js")
        assert (VENDORED_DIR / f"LICENSE-{stem}").is_file(), stem


def test_the_page_template_is_current_with_the_vendored_bundles_and_loads_nothing_from_the_network():
    page = PAGE_TEMPLATE.read_text(encoding="utf-8")
    assert page == page_template(), "stale: run `python -m clinfuse.evaluation.dvc_page`"
    assert "{plot_divs}" in page and "{scripts}" not in page  # {scripts} is where DVC puts its CDN tags
    assert FETCHED_URL.search(page) is None
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc" / "config")
    # DVC resolves a relative html_template against .dvc/
    assert (ROOT / ".dvc" / config["plots"]["html_template"]).resolve() == PAGE_TEMPLATE


def test_a_page_whose_script_comes_from_a_cdn_is_caught():
    assert FETCHED_URL.search('<script src="https://cdn.jsdelivr.net/npm/vega@5.20.2"></script>')
    assert FETCHED_URL.search("<script type='text/javascript' src=//cdn.example/x.js></script>")
    assert FETCHED_URL.search('<link rel="stylesheet" href="http://example.org/a.css">')
    assert FETCHED_URL.search('<script src="vega.min.js"></script>') is None


METHODS = ["late_fusion", "masam", "unimodal_image"]


def _env(ws: Path) -> dict[str, str]:
    # HOME in the workspace: no user-level DVC config applies
    return {"DVC_NO_ANALYTICS": "1", "PATH": "/usr/bin:/bin", "HOME": str(ws)}


def _workspace(tmp_path: Path, cohorts: tuple[str, ...] = ("adni", "mimic-mortality")) -> Path:
    """A DVC project holding this project's plot definitions, templates and page template, and plot
    files as `clinfuse report` writes them, from made-up test predictions of METHODS (80 samples)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    subprocess.run([str(DVC), "init", "--no-scm", "-q"], cwd=ws, check=True, capture_output=True, env=_env(ws))
    # the project's plots section (html_template) added to the fresh config (which says `no_scm`)
    with (ws / ".dvc" / "config").open("a") as config:
        config.write("[plots]" + (ROOT / ".dvc" / "config").read_text().split("[plots]", 1)[1])
    shutil.copytree(ROOT / "evaluation" / "templates" / "dvc", ws / "evaluation" / "templates" / "dvc")
    entries = [e for e in yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
               if next(iter(e)).split("/")[1] in cohorts]
    (ws / "dvc.yaml").write_text(yaml.safe_dump({"plots": entries}, sort_keys=False))
    rng = np.random.default_rng(0)
    for cohort in cohorts:
        labels = COHORT_LABELS[cohort]
        y = rng.integers(0, 2, size=(80, len(labels)))
        curves: dict[str, tuple[list, list]] = {}
        for k, method in enumerate(METHODS):
            scores = np.clip(y * (0.2 + 0.2 * k) + rng.random(y.shape), 0, None) / 2
            curves[method] = curve_records(y, scores, labels)
        for i, kind in enumerate(("pr", "roc")):
            folder = ws / "reports" / cohort / "plots" / kind
            folder.mkdir(parents=True)
            for label, records in curves_by_label({m: c[i] for m, c in curves.items()},
                                                  dict.fromkeys(METHODS, 42)).items():
                (folder / f"{slug(label)}.json").write_text(json.dumps(records))
    return ws


def _plots_show(ws: Path) -> str:
    """`dvc plots show` in `ws` (a DVC project without git), returning the page it writes."""
    done = subprocess.run([str(DVC), "plots", "show", "-o", "out"], cwd=ws, capture_output=True, text=True,
                          env=_env(ws), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return (ws / "out" / "index.html").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def plots_page(tmp_path_factory) -> tuple[Path, str]:
    ws = _workspace(tmp_path_factory.mktemp("dvc-plots"))
    return ws, _plots_show(ws)


def test_dvc_plots_show_writes_a_page_that_references_no_http_url_for_its_scripts(plots_page):
    _, page = plots_page
    assert FETCHED_URL.search(page) is None, FETCHED_URL.search(page)
    assert "cdn.jsdelivr" not in page
    for name in VENDORED:
        assert f"/* {name} */" in page  # inline
    assert page.count("vegaEmbed(") == 2 * (3 + 1)  # a chart per label and curve kind


def test_every_method_appears_in_each_labels_chart_data(plots_page):
    _, page = plots_page
    specs = [json.loads(s) for s in re.findall(r"var spec = (\{.*?\});\n\s*vegaEmbed", page, re.DOTALL)]
    assert len(specs) == 8
    for spec in specs:
        assert re.search(r"\| (CN|MCI|AD|in_hospital_mortality):", spec["title"]["text"]), spec["title"]
        assert {r["method"] for r in spec["data"]["values"]} == set(METHODS), spec["title"]
        assert spec["encoding"]["color"]["field"] == "method"


def _browser() -> str | None:
    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


# After the charts had time to draw: per chart, the methods its line marks were drawn for (vega-embed 7
# draws SVG; each line's aria-label reads "...; method: <name>; revision: <rev>")
PROBE = """<script>
setTimeout(function () {
  var charts = {};
  document.querySelectorAll(".vega-embed").forEach(function (chart) {
    var methods = [];
    chart.querySelectorAll(".mark-line path").forEach(function (line) {
      var m = /method: ([^;]+)/.exec(line.getAttribute("aria-label") || "");
      if (m && (line.getAttribute("d") || "").length > 20 && methods.indexOf(m[1]) < 0) { methods.push(m[1]); }
    });
    charts[chart.id] = methods;
  });
  document.body.setAttribute("data-drawn", JSON.stringify(
    {vega: typeof vega !== "undefined" ? vega.version : null, charts: charts}));
}, 1500);
</script>"""


@pytest.mark.skipif(_browser() is None, reason="no headless Chromium on PATH (Debian: apt-get install chromium)")
def test_the_page_draws_every_methods_line_in_chromium_with_the_network_cut_off(plots_page, tmp_path):
    ws, page = plots_page
    probe = ws / "out" / "probe.html"
    head, tail = page.rsplit("</body>", 1)  # the last one: the bundles hold the string "</body>" too
    probe.write_text(head + PROBE + "</body>" + tail, encoding="utf-8")
    # every request goes to a proxy that refuses connections: a script from a CDN would not load
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--proxy-server=127.0.0.1:9",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--window-size=1400,1000"]
    dom = subprocess.run([_browser(), *flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                         timeout=180)
    found = re.search(r'data-drawn="([^"]*)"', dom.stdout)
    assert found, f"the page did not run its scripts: {dom.stderr[-800:]}"
    drawn = json.loads(found.group(1).replace("&quot;", '"'))
    assert str(drawn["vega"]).startswith("6."), drawn["vega"]  # None: the scripts did not load
    assert len(drawn["charts"]) == 8
    assert all(sorted(methods) == METHODS for methods in drawn["charts"].values()), drawn["charts"]

"""The pipeline registers after writing the cohort reports: the summary page is where the registered version shows."""

from __future__ import annotations

import json
import shutil

from clinfuse.pipeline.cli import main


def test_the_summary_page_lists_each_cohorts_registered_version_and_a_cohort_not_yet_registered(pipeline_run, tmp_path):
    root, base, _ = pipeline_run
    record = json.loads((root / "registry.json").read_text())[0]
    reports = tmp_path / "reports"
    for cohort in ("mimic-phenotype", "mimic-mortality"):
        shutil.copytree(root / "eval", reports / cohort / "runs")
    shutil.copy(root / "registry.json", reports / "mimic-phenotype" / "registry.json")
    assert main(base + ["tables", "--reports", str(reports), "--cohorts", "mimic-phenotype", "mimic-mortality"]) == 0
    page = (reports / "summary.html").read_text()
    section = page[page.index('id="registry"'):page.index("</table>", page.index('id="registry"'))]
    assert f"<code>{record['name']}</code></td><td>{record['version']}</td><td><code>@champion</code>" in section
    assert f'href="http://127.0.0.1:5000/#/models/{record["name"]}/versions/{record["version"]}"' in section
    assert "<td>mimic-mortality</td><td colspan=\"6\">not registered (run <code>clinfuse register</code>)" in section


def test_a_report_written_before_register_says_where_the_version_will_show(pipeline_run, tmp_path):
    root, base, cohort = pipeline_run
    assert main(base + ["report", "--cohort", str(cohort), "--runs", str(root / "eval"), "--summary-link",
                        "../summary.html", "--out", str(tmp_path / "report")]) == 0
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<code>mimic-phenotype</code>: registered after this report by `clinfuse register`" in html
    assert 'href="../summary.html#registry"' in html

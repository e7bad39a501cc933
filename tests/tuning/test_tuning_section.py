"""The report's and the summary's tuning section, from hand-written study records."""

from __future__ import annotations

from types import SimpleNamespace

from jinja2 import ChoiceLoader, DictLoader, Environment, FileSystemLoader, select_autoescape

from clinfuse.evaluation.report import TEMPLATES
from clinfuse.evaluation.tuning import describe_space, tuning_rows


def _trial(number, state, value, rho, lr):
    return {"number": number, "state": state, "value": value, "params": {"rho": rho, "train.lr": lr},
            "counted": True, "retry_of": None}


STUDY = {
    "method": "sam", "budget": 3, "target": 3, "grid_size": 4, "sampler": "grid", "pruner": "median",
    "metric": "val_macro_auprc", "space": {"rho": [0.05, 0.5], "train.lr": [0.001, 0.002]},
    "sources": ["Foret et al. 2021"], "fixed_options": {}, "trial_epochs": 2,
    "trials": [_trial(0, "COMPLETE", 0.61, 0.05, 0.001), _trial(1, "PRUNED", None, 0.5, 0.001),
               _trial(2, "COMPLETE", 0.72, 0.5, 0.002)],
    "selected": _trial(2, "COMPLETE", 0.72, 0.5, 0.002),
}
UNTUNED = {"method": "late_fusion", "budget": 0, "target": 0, "grid_size": 8, "sampler": "grid", "pruner": "none",
           "metric": None, "space": {"train.lr": [0.001, 0.002]}, "sources": ["x"], "trials": [], "selected": None}


def test_rows_count_trials_by_state_and_carry_the_selection_and_a_figure():
    (row, untuned) = tuning_rows([STUDY, UNTUNED])
    assert (row["trials"], row["complete"], row["pruned"], row["failed"]) == (3, 2, 1, 0)
    assert row["selected"] == {"trial": 2, "value": 0.72, "params": {"rho": "0.5", "train.lr": "0.002"}}
    assert row["figure"] and untuned["figure"] is None and untuned["selected"] is None


def test_a_space_is_described_one_line_per_hyperparameter():
    assert describe_space({"rho": [0.1, 0.3], "lr": {"low": 1e-5, "high": 0.01, "log": True}}) == [
        "rho: 0.1, 0.3", "lr: 1e-05 to 0.01 (log)"]


def test_the_report_section_states_space_trials_selection_and_that_selection_was_on_validation():
    page = '{% import "sections/_macros.html.j2" as ui with context %}{% include "sections/tuning.html.j2" %}'
    env = Environment(loader=ChoiceLoader([DictLoader({"page": page}), FileSystemLoader(TEMPLATES)]),
                      autoescape=select_autoescape(["html", "j2"]))
    html = env.get_template("page").render(d=SimpleNamespace(tuning=tuning_rows([STUDY, UNTUNED])))
    assert "rho: 0.05, 0.5" in html and "3 (2 / 1 / 0)" in html
    assert "trial 2: rho = 0.5, train.lr = 0.002" in html and "0.7200" in html
    assert "<b>validation</b> split" in html and "never on test" in html
    assert "median pruning" in html
    assert "not tuned (tune.budget 0)" in html
    assert html.count("data:image/png;base64,") == 1  # one figure: the tuned method's


def test_the_summary_lists_each_cohorts_tuned_methods(tmp_path):
    import json

    from clinfuse.pipeline.stages.summary_tables import _tuning

    (tmp_path / "adni" / "sam").mkdir(parents=True)
    (tmp_path / "adni" / "sam" / "study.json").write_text(json.dumps(STUDY))
    rows = _tuning(tmp_path, ["adni", "mimic-mortality"], ["sam", "masam"])
    assert list(rows) == ["adni"] and rows["adni"][0]["selected"]["value"] == 0.72
    assert rows["adni"][0]["figure"] is None

"""`make mutation`: the order in which a mutant's tests run, and when mutmut's clean run is not repeated
(tests/mutation/mutmut_namespaced.py)."""

from __future__ import annotations

import pytest
from mutmut.state import state

from tests.mutation import mutmut_namespaced as wrapper

# the stats run met them in this order (the suite's collection order), with these call times
RECORDED = {"tests/a.py::slow_e2e": 40.0, "tests/a.py::unit": 0.01, "tests/b.py::medium": 2.0, "tests/b.py::tie": 0.01}


@pytest.fixture
def recorded(monkeypatch):
    monkeypatch.setattr(state(), "duration_by_test", dict(RECORDED))


def test_a_mutant_s_tests_run_quickest_first_ties_in_the_suite_s_order_and_unrecorded_ones_as_zero(recorded):
    tests = ["tests/b.py::medium", "tests/a.py::slow_e2e", "tests/b.py::tie", "tests/a.py::unit", "tests/c.py::new"]
    assert wrapper.fastest_first(tests) == [
        "tests/c.py::new", "tests/a.py::unit", "tests/b.py::tie", "tests/b.py::medium", "tests/a.py::slow_e2e"]


def test_the_clean_run_keeps_the_suite_s_order_with_unknown_tests_last(recorded):
    tests = {"tests/b.py::tie", "tests/c.py::new", "tests/a.py::unit", "tests/a.py::slow_e2e"}
    assert wrapper.in_suite_order(tests) == [
        "tests/a.py::slow_e2e", "tests/a.py::unit", "tests/b.py::tie", "tests/c.py::new"]


class _Runner:
    """Stands for mutmut's runner, which the wrapped functions pass on untouched."""


def test_the_clean_run_is_skipped_only_after_a_complete_stats_run_passed(tmp_path, monkeypatch, recorded):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mutants").mkdir()
    ran = []
    monkeypatch.setattr(wrapper, "_run_clean_tests", lambda self, tests: ran.append(tests) or 0)
    monkeypatch.setattr(wrapper, "_run_stats_collection", lambda runner, tests=None: None)

    wrapper.run_clean_tests(_Runner(), {"tests/b.py::tie", "tests/a.py::unit"})
    assert ran == [["tests/a.py::unit", "tests/b.py::tie"]]  # no stats run yet: it runs, in the suite's order

    wrapper.run_stats_collection(_Runner(), tests=["tests/c.py::new"])  # an incremental stats run: new tests only
    wrapper.run_clean_tests(_Runner(), {"tests/a.py::unit"})
    assert len(ran) == 2

    wrapper.run_stats_collection(_Runner())  # a complete one (mutmut exits the process when one fails)
    assert wrapper.run_clean_tests(_Runner(), {"tests/a.py::unit"}) == 0
    assert len(ran) == 2

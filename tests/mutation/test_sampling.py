"""`make mutation SAMPLE=F`: the sample it draws, the interval it prints, and which spawned-process tests
re-check a survivor (tests/mutation/run.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.mutation.run import coverage, module_of, module_scores, sample_mutants, wilson_interval

NAMES = [f"clinfuse.etl.split.x_assign_patient_split__mutmut_{i}" for i in range(1, 21)] + [
    f"clinfuse.models.methods.masam.xǁMASAMǁstep__mutmut_{i}" for i in range(1, 11)]


def test_a_mutant_belongs_to_the_module_of_its_file_whether_function_or_method():
    assert module_of("clinfuse.etl.split.x_assign_patient_split__mutmut_3") == "etl.split"
    assert module_of("clinfuse.models.methods.masam.xǁMASAMǁstep__mutmut_7") == "models.methods.masam"


def test_the_sample_takes_the_fraction_of_each_module_and_is_the_same_for_the_same_seed():
    sample = sample_mutants(NAMES, 0.2, seed=0)
    assert sum(n.startswith("clinfuse.etl.split.") for n in sample) == 4  # 20 % of 20
    assert sum(n.startswith("clinfuse.models.methods.masam.") for n in sample) == 2  # 20 % of 10
    assert sample == sample_mutants(list(reversed(NAMES)), 0.2, seed=0)
    assert sample != sample_mutants(NAMES, 0.2, seed=1)


def test_a_module_s_sample_does_not_depend_on_the_other_modules():
    alone = sample_mutants(NAMES[:20], 0.2, seed=0)
    assert [n for n in sample_mutants(NAMES, 0.2, seed=0) if n.startswith("clinfuse.etl.")] == alone


def test_every_module_keeps_at_least_one_mutant():
    assert len(sample_mutants(NAMES, 0.01, seed=0)) == 2


def test_a_minimum_tops_up_each_module_and_keeps_every_mutant_the_fraction_drew():
    smaller = sample_mutants(NAMES, 0.2, seed=0)
    larger = sample_mutants(NAMES, 0.2, seed=0, minimum=6)
    assert sum(n.startswith("clinfuse.etl.split.") for n in larger) == 6  # 20 % of 20 = 4, topped up to 6
    assert sum(n.startswith("clinfuse.models.methods.masam.") for n in larger) == 6  # 2, topped up to 6
    assert set(smaller) <= set(larger)  # the results already run for the smaller sample still count
    assert len(set(larger)) == len(larger)
    assert larger == sample_mutants(list(reversed(NAMES)), 0.2, seed=0, minimum=6)


def test_a_minimum_above_a_module_s_size_takes_all_of_it_and_below_the_fraction_changes_nothing():
    everything = sample_mutants(NAMES, 0.2, seed=0, minimum=15)
    assert sum(n.startswith("clinfuse.models.methods.masam.") for n in everything) == 10  # all 10
    assert sum(n.startswith("clinfuse.etl.split.") for n in everything) == 15
    assert sample_mutants(NAMES, 0.2, seed=0, minimum=2) == sample_mutants(NAMES, 0.2, seed=0)


def test_the_wilson_interval_by_hand():
    # 9 of 10: p = 0.9, z = 1.96, z^2 = 3.8416: centre (0.9 + 3.8416 / 20) / (1 + 3.8416 / 10) = 0.78898,
    # half-width 1.96 * sqrt(0.9 * 0.1 / 10 + 3.8416 / 400) / 1.38416 = 0.19314 -> (0.5958, 0.9821)
    lo, hi = wilson_interval(9, 10)
    assert (lo, hi) == pytest.approx((0.5958, 0.9821), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.7225, abs=1e-4)
    # n of n killed: lower bound n / (n + z^2); 40 / 43.8416 = 0.9124 (why SAMPLE_MIN=40)
    assert wilson_interval(40, 40)[0] == pytest.approx(40 / (40 + 1.959964 ** 2), abs=1e-9)


def test_module_scores_count_kills_per_module():
    scored = NAMES[:3] + NAMES[20:22]
    assert module_scores([NAMES[0], NAMES[20]], scored) == {"etl.split": (1, 3), "models.methods.masam": (1, 2)}


def test_a_module_line_says_whether_it_covers_every_mutant_a_sample_or_an_unfinished_run():
    assert coverage(69, 69, 65, 65, drawn=7) == " (all 69 mutants)"
    lo, hi = wilson_interval(9, 10)
    assert coverage(11, 110, 9, 10, drawn=11) == f" (11 of 110 mutants, sampled: 95 % CI {lo:.3f}-{hi:.3f})"
    assert coverage(6, 110, 5, 5, drawn=11) == (
        " (6 of the 11 sampled mutants run, unfinished: the quickest first, not a random subset; no interval)")
    assert coverage(11, 110, 9, 10, drawn=None) == (
        " (11 of 110 mutants run, unfinished: the quickest first, not a random subset; no interval)")


def test_a_method_s_survivor_reruns_its_own_two_process_cases_and_a_trainer_s_the_trainer_s():
    from tests.mutation.run import SPAWNED_TESTS, spawned_tests_for

    masam = "clinfuse.models.methods.masam.xǁMASAMǁstep__mutmut_7"
    assert spawned_tests_for(masam, SPAWNED_TESTS["clinfuse.models.methods."]) == [
        "tests/distributed/test_methods_data_parallel.py", "-k", "two_processes and (masam)"]
    base = "clinfuse.models.methods.base.x_check_range__mutmut_1"
    assert spawned_tests_for(base, SPAWNED_TESTS["clinfuse.models.methods."])[-1] == \
        "two_processes and (late_fusion or sam)"
    trainer = "clinfuse.pipeline.trainer.x_fit__mutmut_560"
    assert spawned_tests_for(trainer, SPAWNED_TESTS["clinfuse.pipeline.trainer."]) == [
        "tests/distributed/test_trainer_data_parallel.py", "-k", "two_processes or sync_batchnorm"]


def test_a_mutated_copy_an_interrupted_run_left_empty_or_cut_short_is_generated_again(tmp_path, monkeypatch):
    from tests.mutation import run

    (tmp_path / "pkg").mkdir()
    sources = {"whole.py": "def f():\n    return 1\n", "empty.py": "def g():\n    return 2\n",
               "cut.py": "def h():\n    return 3\n", "blank.py": "\n"}
    copies = {"whole.py": "def f():\n    return 1\n", "empty.py": "", "cut.py": "def h():\n    return (",
              "blank.py": ""}
    for name, text in sources.items():
        (tmp_path / "pkg" / name).write_text(text)
        (tmp_path / "mutants" / "pkg").mkdir(parents=True, exist_ok=True)
        (tmp_path / "mutants" / "pkg" / name).write_text(copies[name])
    monkeypatch.chdir(tmp_path)  # mutmut's walk yields paths relative to the working directory
    monkeypatch.setattr("mutmut.utils.file_utils.walk_mutatable_files",
                        lambda: iter(sorted(Path("pkg").glob("*.py"))))
    dropped = run.drop_truncated_copies(tmp_path)
    assert sorted(p.name for p in dropped) == ["cut.py", "empty.py"]  # an empty copy of an empty source is whole
    assert sorted(p.name for p in (tmp_path / "mutants" / "pkg").iterdir()) == ["blank.py", "whole.py"]

"""mutmut, with mutants named after the modules the tests import: `clinfuse.etl.normalize...`.

    python tests/mutation/mutmut_namespaced.py run --max-children 2   # what tests/mutation/run.py calls

mutmut names a mutant after its file's path (`etl/normalize.py` -> `etl.normalize.x_f__mutmut_3`),
and the trampoline it plants runs a mutant only when that name starts with the running function's
`__module__`. clinfuse keeps its source folders at the top of the checkout but imports them under
one namespace (clinfuse/__init__.py): the file etl/normalize.py is the module
`clinfuse.etl.normalize`. Without the `clinfuse.` prefix no test would ever switch a mutant on,
and every mutant would "survive" (or, where mutmut notices, be reported as having no tests).

mutmut computes the name in one function, `get_mutant_name`, imported by name into two modules;
all three references are replaced here before mutmut's command line runs. Mutant workers fork
from this process (directly, or through mutmut's fork server), so they inherit the change.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import version
from pathlib import Path

import mutmut.__main__ as mutmut_main
import mutmut.mutation.file_mutation as file_mutation
import mutmut.utils.format_utils as format_utils
from mutmut.state import state
from mutmut.workers.isolation import ForkServerRunner

ROOTS = ("pipeline", "etl", "models", "evaluation", "configs")  # the folders installed as clinfuse.<folder>
_by_path = format_utils.get_mutant_name


def get_mutant_name(relative_source_path, mutant_method_name: str) -> str:
    """mutmut's path-derived name, prefixed with `clinfuse.` for the namespaced folders."""
    name = _by_path(relative_source_path, mutant_method_name)
    return f"clinfuse.{name}" if name.split(".")[0] in ROOTS else name


_set_mutant_under_test = mutmut_main.set_mutant_under_test


def set_mutant_under_test(name: str | None) -> None:
    """mutmut's switch, except that the stats phase is not inherited by the processes tests start.

    In the stats phase every trampoline records which test reached it, reading mutmut's config from
    the working directory. A test that starts a process elsewhere on the mutated copy (`mlflow models
    predict` on a registered model, whose code/ is the copied package) would record there too, find no
    config and fail ("Could not figure out where the code to mutate is"), ending the stats run. Such a
    process's hits are never collected anyway: "stats" stays in this process only (mutmut's
    process-local copy), and its children see no mutant.
    """
    _set_mutant_under_test(name)
    if name == "stats":
        os.environ.pop("MUTANT_UNDER_TEST", None)


def fastest_first(tests: list[str]) -> list[str]:
    """A mutant's tests, quickest recorded first (ties in the suite's order).

    mutmut's fork runner sorts them so; its fork server (`process_isolation = "forkserver"`) runs them
    in set order, so a mutant a 0.01 s unit test kills could first build a minutes-long end-to-end
    fixture. The first failure ends the run (-x): the verdict is the same, reached sooner."""
    # sorted() is stable: ties keep the suite's order
    return sorted(in_suite_order(tests), key=lambda t: state().duration_by_test.get(t, 0.0))


def in_suite_order(tests) -> list[str]:
    """Tests in the order the stats run met them (the suite's collection order), unknown ones last."""
    order = {name: i for i, name in enumerate(state().duration_by_test)}
    return sorted(tests, key=lambda t: (order.get(t, len(order)), t))


# Written when a complete stats run passes; tests/mutation/run.py deletes it when an invocation starts, so
# it speaks for the invocation that wrote it (a sampled run calls mutmut twice: stats, then the sample).
FULL_STATS_PASSED = Path("mutants") / "full-stats-passed"
_run_stats_collection = mutmut_main.run_stats_collection


def run_stats_collection(runner, tests=None) -> None:
    """mutmut's stats run (it exits the process on a failing test); marks a complete one that passed."""
    _run_stats_collection(runner, tests)
    if not tests:
        FULL_STATS_PASSED.write_text("every selected test passed on the unmutated code in the stats run\n")


_submit, _run_clean_tests = ForkServerRunner.submit, ForkServerRunner.run_clean_tests


def submit(self, mutant_name: str, tests: list[str], cpu_time_limit: int, estimated_time: float) -> None:
    _submit(self, mutant_name, fastest_first(list(tests)), cpu_time_limit, estimated_time)


def run_clean_tests(self, tests) -> int:
    """mutmut's clean run (every selected test on the unmutated code), in the suite's order, and not
    twice: a complete stats run that passed in this invocation ran every test on the unmutated code
    (mutmut stops on its first failure). Otherwise (stats loaded from an earlier run) the suite's order:
    mutmut's is set order, different in every process, and a failure there was not reproducible."""
    if FULL_STATS_PASSED.is_file():
        print("    clean tests: every test passed on the unmutated code in the stats run just now; not run twice")
        return 0
    return _run_clean_tests(self, in_suite_order(tests))


def main() -> None:
    mutmut_main.set_mutant_under_test = set_mutant_under_test
    mutmut_main.run_stats_collection = run_stats_collection
    ForkServerRunner.submit, ForkServerRunner.run_clean_tests = submit, run_clean_tests
    for module in (format_utils, file_mutation, mutmut_main):
        if getattr(module, "get_mutant_name", None) is not _by_path:
            # a mutmut release that moved the function: fail loudly rather than run with wrong names
            sys.exit(f"mutmut {version('mutmut')}: {module.__name__}.get_mutant_name is not the function "
                     "this wrapper replaces; update tests/mutation/mutmut_namespaced.py for this mutmut version")
        module.get_mutant_name = get_mutant_name
    sys.argv[0] = "mutmut"
    mutmut_main.cli()


if __name__ == "__main__":
    main()

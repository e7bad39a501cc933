"""`make mutation`: mutation testing of the core modules with mutmut, and the score.

    python tests/mutation/run.py --fresh              # every core module from scratch (`make mutation`)
    python tests/mutation/run.py "etl.normalize.*"    # re-run one module's mutants (mutant-name globs),
                                                      # keeping the others' results (`make mutation MODULES=...`)
    python tests/mutation/run.py --report-only        # score what earlier runs left in mutants/
    python tests/mutation/run.py --spawned-only       # re-check survivors against the spawned-process tests only
    python tests/mutation/run.py "etl.*" --recheck tests/x.py  # re-check survivors (globs first) against
                                                      # tests written since the run

mutmut plants one small change at a time (a flipped comparison, a changed constant, a
dropped argument...) and runs the tests that call the changed function; a mutant is
killed when a test fails (or it times out). Survivors that no test could ever kill
(equivalent mutants: same behaviour) are listed, with the reason, in EQUIVALENT.md beside
this file, matched by function and mutated line, so renumbering does not stale the list.

The score is killed / (mutants checked - listed equivalents), printed last as
`mutation score: <killed>/<total> = <ratio>`. A survivor that is not listed is printed
with its diff: kill it with a test, or list it with the reason it is equivalent.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EQUIVALENT = Path(__file__).with_name("EQUIVALENT.md")
KILLED = {"killed", "timeout", "segfault", "caught by type check"}
NOT_RUN = {"not checked", "skipped"}


def results() -> dict[str, tuple[str, Path]]:
    """mutant name -> (status, source file), for every mutant mutmut knows of."""
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.stats import status_by_exit_code
    from mutmut.utils.file_utils import walk_mutatable_files

    found = {}
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        found.update({k: (status_by_exit_code[v], path) for k, v in data.exit_code_by_key.items()})
    return found


def function_of(mutant: str) -> str:
    """`clinfuse.etl.normalize.x_train_statistics__mutmut_3` -> `etl.normalize.train_statistics`
    (`...xǁMASAMǁstep__mutmut_7` -> `...MASAM.step`): EQUIVALENT.md names functions by file path."""
    name = re.sub(r"__mutmut_\d+$", "", mutant).removeprefix("clinfuse.")
    module, _, func = name.rpartition(".")
    func = func.removeprefix("x_").removeprefix("xǁ").replace("ǁ", ".")
    return f"{module}.{func}"


def mutated_lines(mutant: str, path: Path) -> str:
    """The lines the mutant adds, stripped and joined: the key EQUIVALENT.md matches on."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    diff = get_diff_for_mutant(mutant, path=path)
    added = [line[1:].strip() for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    return " / ".join(a for a in added if a)


def equivalents() -> dict[tuple[str, str], str]:
    """(function, mutated line) -> reason, from the table rows of EQUIVALENT.md."""
    table = {}
    for line in EQUIVALENT.read_text().splitlines():
        if not line.startswith("|"):
            continue
        # cells split on unescaped pipes; a `|` inside a code line is written `\|`
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
        if len(cells) == 3 and cells[0].startswith("`") and cells[1].startswith("`"):
            table[(cells[0][1:-1], cells[1][1:-1])] = cells[2]
    return table


# Tests whose code under test runs in spawned processes (the data-parallel equivalence test
# starts two gloo ranks): mutmut traces only its own process, so it never maps these tests to
# the functions they exercise. Survivors in these modules are re-run against them directly,
# with the mutant switched on through MUTANT_UNDER_TEST (the spawned ranks inherit it).
SPAWNED_TESTS = {"clinfuse.models.methods.": ["tests/distributed/test_methods_data_parallel.py", "-k", "two_processes"]}


def spawned_tests_for(mutant: str, tests: list[str]) -> list[str]:
    """A method module's mutant is run against that method's cases only (`masam` -> the MASAM cases;
    `-k sam` also picks MASAM's, which call SAM's code); the shared base module against the late fusion,
    SAM and MASAM cases, which between them reach every base helper the core methods use."""
    module = mutant.removeprefix("clinfuse.models.methods.").split(".")[0]
    if tests[-2:] != ["-k", "two_processes"] or module == mutant:
        return tests
    chosen = "late_fusion or sam" if module == "base" else module
    return [*tests[:-1], f"two_processes and ({chosen})"]


def _tests_fail(tests: list[str], mutant: str) -> bool:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(MUTANT_UNDER_TEST=mutant, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    code = subprocess.call([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                           cwd=ROOT / "mutants", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return code == 1  # 1: a test failed; 0 passed; 2-5: the run itself broke (counted as not killed)


_BASELINE_PASSES: dict[str, bool] = {}


def killed_by_spawned_tests(mutant: str) -> bool:
    """True when a spawned-process test fails with `mutant` active, and passes without it."""
    prefix = next((p for p in SPAWNED_TESTS if mutant.startswith(p)), None)
    if prefix is None:
        return False
    tests = spawned_tests_for(mutant, SPAWNED_TESTS[prefix])
    key = " ".join(tests)
    if key not in _BASELINE_PASSES:  # a test that fails unmutated would "kill" every mutant
        _BASELINE_PASSES[key] = not _tests_fail(tests, "none")
        if not _BASELINE_PASSES[key]:
            print(f"warning: {key} fails without any mutant; its verdicts are not used", file=sys.stderr)
    return _BASELINE_PASSES[key] and _tests_fail(tests, mutant)


_BASELINE_FAILURES: dict[str, list[str]] = {}


def killed_by_tests(mutant: str, tests: list[str]) -> bool:
    """True when one of `tests` fails with `mutant` active. Tests that fail without any mutant
    (they check code changed since mutmut copied it into mutants/) are left out, named once."""
    key = " ".join(tests)
    if key not in _BASELINE_FAILURES:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(MUTANT_UNDER_TEST="none", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", *tests],
                              cwd=ROOT / "mutants", env=env, capture_output=True, text=True)
        failing = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("FAILED ")]
        _BASELINE_FAILURES[key] = failing
        for node in failing:
            print(f"warning: {node} fails without any mutant (it checks newer code): left out of the re-check",
                  file=sys.stderr)
    deselect = [arg for node in _BASELINE_FAILURES[key] for arg in ("--deselect", node)]
    return _tests_fail([*tests, *deselect], mutant)


def namespaced(patterns: list[str]) -> list[str]:
    """Mutant-name globs as mutmut knows them: `etl.normalize.*` -> `clinfuse.etl.normalize.*`."""
    return [p if p.startswith(("clinfuse.", "*")) else f"clinfuse.{p}" for p in patterns]


def selected(name: str, patterns: list[str]) -> bool:
    from fnmatch import fnmatch

    return not patterns or any(fnmatch(name, p) for p in patterns)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patterns", nargs="*", help="mutant-name globs, e.g. 'etl.normalize.*' (default: all)")
    parser.add_argument("--max-children", type=int, default=1, help="parallel mutant workers (default 1)")
    parser.add_argument("--report-only", action="store_true", help="score earlier results, run nothing")
    parser.add_argument("--spawned-only", action="store_true",
                        help="skip mutmut; run only the spawned-process tests on earlier survivors, then score")
    parser.add_argument("--recheck", nargs="+", metavar="TEST", default=[],
                        help="skip mutmut; copy tests/ into mutants/ and run these test files against every "
                             "unexplained survivor (tests written since the run), then score")
    parser.add_argument("--fresh", action="store_true",
                        help="delete mutants/ first (mutmut keeps its copy of unmutated files and old verdicts)")
    args = parser.parse_args(argv)
    args.patterns = namespaced(args.patterns)

    os.chdir(ROOT)  # mutmut reads pyproject.toml and mutants/ from the working directory
    if args.fresh and not args.report_only:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    if not args.report_only and not args.spawned_only and not args.recheck:
        log = ROOT / "mutants" / "run.log"
        log.parent.mkdir(exist_ok=True)
        with open(log, "w") as fh:
            # mutmut imports the mutated copy (mutants/); PYTHONPATH pointing at the checkout would shadow it.
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
            # mutmut with mutants named clinfuse.<folder>... as the tests import them (see mutmut_namespaced.py)
            code = subprocess.call([sys.executable, str(Path(__file__).with_name("mutmut_namespaced.py")), "run",
                                    "--max-children", str(args.max_children), *args.patterns],
                                   cwd=ROOT, env=env, stdout=fh, stderr=fh)
        for name in ("spawned-verdicts.json", "recheck-verdicts.json"):
            stale = ROOT / "mutants" / name
            if stale.is_file() and args.patterns:
                kept = {k: v for k, v in json.loads(stale.read_text()).items() if not selected(k, args.patterns)}
                stale.write_text(json.dumps(kept, indent=1))
        if code != 0:
            print(log.read_text()[-3000:])
            sys.exit(f"mutmut run failed (exit {code}); full log: {log}")

    found = {k: v for k, v in results().items() if selected(k, args.patterns)}
    status = {k: s for k, (s, _) in found.items()}
    checked = {k: v for k, v in status.items() if v not in NOT_RUN}
    killed = [k for k, v in checked.items() if v in KILLED]
    alive = sorted(k for k, v in checked.items() if v not in KILLED)
    # verdicts of the spawned-process tests, kept beside mutmut's own (mutants/ is wiped by --fresh;
    # a re-run of a mutant by mutmut drops its entry, since the mutated function may have changed)
    cache_file = ROOT / "mutants" / "spawned-verdicts.json"
    cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    others = {k: v for k, v in cache.items() if not selected(k, args.patterns)}  # kept: not this run's business
    cache = {k: v for k, v in cache.items() if k in alive}
    if not args.report_only:
        for k in alive:
            if k not in cache and any(k.startswith(prefix) for prefix in SPAWNED_TESTS):
                cache[k] = killed_by_spawned_tests(k)
        cache_file.write_text(json.dumps({**others, **cache}, indent=1))
    spawned = [k for k in alive if cache.get(k)]
    for k in spawned:
        checked[k] = "killed (spawned-process test)"
    killed += spawned
    alive = [k for k in alive if k not in spawned]
    table = equivalents()
    # verdicts of tests written after mutmut's run (--recheck), kept like the spawned ones
    recheck_file = ROOT / "mutants" / "recheck-verdicts.json"
    recheck = json.loads(recheck_file.read_text()) if recheck_file.is_file() else {}
    others = {k: v for k, v in recheck.items() if not selected(k, args.patterns)}
    recheck = {k: v for k, v in recheck.items() if k in alive}
    if args.recheck:
        shutil.copytree(ROOT / "tests", ROOT / "mutants" / "tests", dirs_exist_ok=True)
        pending = [k for k in alive if not recheck.get(k)
                   and (function_of(k), mutated_lines(k, found[k][1])) not in table]
        for i, k in enumerate(pending, 1):
            recheck[k] = killed_by_tests(k, args.recheck)
            print(f"re-checked {i}/{len(pending)}: {k} {'killed' if recheck[k] else 'survived'}", flush=True)
        recheck_file.write_text(json.dumps({**others, **recheck}, indent=1))
    rechecked = [k for k in alive if recheck.get(k)]
    for k in rechecked:
        checked[k] = "killed (re-checked)"
    killed += rechecked
    alive = [k for k in alive if k not in rechecked]
    listed, unexplained = [], []
    for k in alive:
        key = (function_of(k), mutated_lines(k, found[k][1]))
        (listed if key in table else unexplained).append((k, key))

    for k, (func, line) in unexplained:
        print(f"not killed ({checked[k]}): {k}\n    {func}: {line}")
    counts = {s: sum(v == s for v in checked.values()) for s in sorted(set(checked.values()))}
    print(f"mutants: {len(status)} ({len(status) - len(checked)} not run); "
          + ", ".join(f"{s} {n}" for s, n in counts.items())
          + f"; {len(listed)} survivors listed as equivalent in {EQUIVALENT.relative_to(ROOT)}, "
          f"{len(unexplained)} unexplained")
    total = len(checked) - len(listed)
    print(f"mutation score: {len(killed)}/{total} = {len(killed) / total if total else 0.0:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

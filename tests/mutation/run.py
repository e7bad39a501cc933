"""`make mutation`: mutation testing of the core modules with mutmut, and the score.

    python tests/mutation/run.py --fresh              # every core module from scratch (`make mutation`)
    python tests/mutation/run.py "etl.normalize.*"    # re-run one module's mutants (mutant-name globs),
                                                      # keeping the others' results (`make mutation MODULES=...`)
    python tests/mutation/run.py --report-only        # score what earlier runs left in mutants/
    python tests/mutation/run.py --spawned-only       # re-check survivors against the spawned-process tests only
    python tests/mutation/run.py "etl.*" --recheck tests/x.py  # re-check survivors (globs first) against
                                                      # tests written since the run
    python tests/mutation/run.py --fresh --sample 0.2  # a seeded random 20 % of each module's mutants
                                                      # (`make mutation SAMPLE=0.2`): within the hour
    python tests/mutation/run.py --fresh --sample 0.1 --sample-min 40  # and at least 40 of each module
                                                      # (`make mutation SAMPLE=0.1 SAMPLE_MIN=40`)

mutmut plants one small change at a time (a flipped comparison, a changed constant, a
dropped argument...) and runs the tests that call the changed function; a mutant is
killed when a test fails (or it times out). Survivors that no test could ever kill
(equivalent mutants: same behaviour) are listed, with the reason, in EQUIVALENT.md beside
this file, matched by function and mutated line, so renumbering does not stale the list.

The score is killed / (mutants checked - listed equivalents), printed per module and last
overall as `mutation score: <killed>/<total> = <ratio>`. A survivor that is not listed is
printed with its diff: kill it with a test, or list it with the reason it is equivalent.

A sampled run (`--sample F`) generates every mutant, then runs a fixed random fraction F of
each module's (seeded by `--sample-seed`, so the same code gives the same sample) and prints
each module's score with its 95 % Wilson interval: the score of all its mutants lies there
with 95 % confidence. The complete run is the reference; the sample is for when hours are not
available. Naming modules after a sampled run (`make mutation MODULES="etl.split.*"`) runs every
mutant of those modules and adds them: each module's line says whether it covers all its
mutants or a sample.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
from collections import Counter
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
# The trainer's multi-process branches (the mean of the ranks' training losses, rank 0's validation metric,
# the BatchNorm broadcast) run only in the two-rank trainer tests.
METHODS = "clinfuse.models.methods."
SPAWNED_TESTS = {METHODS: ["tests/distributed/test_methods_data_parallel.py", "-k", "two_processes"],
                 "clinfuse.pipeline.trainer.": ["tests/distributed/test_trainer_data_parallel.py",
                                                "-k", "two_processes or sync_batchnorm"]}


def spawned_tests_for(mutant: str, tests: list[str]) -> list[str]:
    """A method module's mutant is run against that method's cases only (`masam` -> the MASAM cases;
    `-k sam` also picks MASAM's, which call SAM's code); the shared base module against the late fusion,
    SAM and MASAM cases, which between them reach every base helper the core methods use. Any other
    module's mutant runs its tests as they are."""
    if not mutant.startswith(METHODS):
        return tests
    module = mutant.removeprefix(METHODS).split(".")[0]
    chosen = "late_fusion or sam" if module == "base" else module
    return [*tests[:-1], f"two_processes and ({chosen})"]


def _env(**extra: str) -> dict[str, str]:
    """The subprocesses' environment: mutmut imports the mutated copy (mutants/), which PYTHONPATH
    pointing at the checkout would shadow; one thread per worker."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    return env


def _tests_fail(tests: list[str], mutant: str) -> bool:
    env = _env(MUTANT_UNDER_TEST=mutant)
    code = subprocess.call([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                           cwd=ROOT / "mutants", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return code == 1  # 1: a test failed; 0 passed; 2-5: the run itself broke (counted as not killed)


def killed_by_spawned_tests(mutant: str) -> bool:
    """True when a spawned-process test fails with `mutant` active (and passes without it)."""
    prefix = next((p for p in SPAWNED_TESTS if mutant.startswith(p)), None)
    return prefix is not None and killed_by_tests(mutant, spawned_tests_for(mutant, SPAWNED_TESTS[prefix]))


_BASELINE_FAILURES: dict[str, list[str]] = {}


def killed_by_tests(mutant: str, tests: list[str]) -> bool:
    """True when one of `tests` fails with `mutant` active. A test that fails without any mutant (it
    checks code changed since mutmut copied it into mutants/) would "kill" every mutant: it is left
    out, named once."""
    key = " ".join(tests)
    if key not in _BASELINE_FAILURES:
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", *tests],
                              cwd=ROOT / "mutants", env=_env(MUTANT_UNDER_TEST="none"), capture_output=True,
                              text=True)
        failing = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("FAILED ")]
        _BASELINE_FAILURES[key] = failing
        for node in failing:
            print(f"warning: {node} fails without any mutant (it checks newer code): left out of the re-check",
                  file=sys.stderr)
    deselect = [arg for node in _BASELINE_FAILURES[key] for arg in ("--deselect", node)]
    return _tests_fail([*tests, *deselect], mutant)


VERDICT_FILES = ("spawned-verdicts.json", "recheck-verdicts.json")


class Verdicts:
    """Verdicts kept beside mutmut's own in mutants/<name> (wiped by --fresh): mutant -> killed.

    A run restricted by globs owns only the mutants they select; the others' entries are kept."""

    def __init__(self, name: str, patterns: list[str]):
        self.path, self.patterns = ROOT / "mutants" / name, patterns
        self.all = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def of(self, alive: list[str]) -> dict[str, bool]:
        """The verdicts of this run's survivors (a mutant mutmut since killed has none)."""
        return {k: v for k, v in self.all.items() if k in alive}

    def save(self, verdicts: dict[str, bool]) -> None:
        if not self.path.parent.is_dir():
            return
        # re-read: another restricted run (a re-check of other modules) may have saved meanwhile
        on_disk = json.loads(self.path.read_text()) if self.path.is_file() else {}
        others = {k: v for k, v in on_disk.items() if not selected(k, self.patterns)}
        self.all = {**others, **verdicts}
        self.path.write_text(json.dumps(self.all, indent=1))


def credit(verdicts: dict[str, bool], alive: list[str], checked: dict, killed: list, label: str) -> list[str]:
    """Count the survivors `verdicts` kill as killed under `label`; the survivors left."""
    newly = [k for k in alive if verdicts.get(k)]
    for k in newly:
        checked[k] = label
    killed += newly
    return [k for k in alive if k not in newly]


def namespaced(patterns: list[str]) -> list[str]:
    """Mutant-name globs as mutmut knows them: `etl.normalize.*` -> `clinfuse.etl.normalize.*`."""
    return [p if p.startswith(("clinfuse.", "*")) else f"clinfuse.{p}" for p in patterns]


def selected(name: str, patterns: list[str]) -> bool:
    from fnmatch import fnmatch

    return not patterns or any(fnmatch(name, p) for p in patterns)


def module_of(mutant: str) -> str:
    """`clinfuse.etl.normalize.x_train_statistics__mutmut_3` -> `etl.normalize` (the mutated file's module)."""
    return function_of(mutant).rsplit(".", 2 if "ǁ" in mutant else 1)[0]


def sample_mutants(names: list[str], fraction: float, seed: int, minimum: int = 1) -> list[str]:
    """A seeded random `fraction` of each module's mutants, at least `minimum` (or all it has), sorted.

    The draw depends only on the module's mutant names, the fraction, the minimum and the seed: the
    same code gives the same sample, and a module's sample does not change when another module's does.
    The minimum tops the fraction's draw up with a second draw from the mutants it left, so the sample
    with a minimum contains the one without (still a uniform random subset: a uniform subset of the
    module plus a uniform subset of the rest), and results already run for the smaller sample count.
    A minimum exists because a small module's 10 % is a handful of mutants, whose interval says little:
    40 mutants all killed give a lower 95 % bound of 0.912.
    """
    by_module: dict[str, list[str]] = {}
    for name in sorted(names):
        by_module.setdefault(module_of(name), []).append(name)
    chosen = []
    for module, members in sorted(by_module.items()):
        k = min(len(members), max(1, round(fraction * len(members))))
        drawn = random.Random(f"{seed}:{module}").sample(members, k)
        rest = sorted(set(members) - set(drawn))
        top_up = min(len(rest), max(0, minimum - k))
        chosen += drawn + random.Random(f"{seed}:{module}:minimum").sample(rest, top_up)
    return sorted(chosen)


def wilson_interval(killed: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion killed / total ((0, 1) when total is 0)."""
    if total == 0:
        return 0.0, 1.0
    p = killed / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def coverage(run: int, generated: int, killed: int, scored: int, drawn: int | None) -> str:
    """What a module's score stands for: every mutant; a random sample of `drawn` mutants, all run (with
    the 95 % interval of the score of all its mutants); or an unfinished run (no interval: mutmut runs
    the quickest mutants first, so the ones run are not a random subset)."""
    if run == generated:
        return f" (all {generated} mutants)"
    if drawn is not None and run == drawn:
        lo, hi = wilson_interval(killed, scored)
        return f" ({run} of {generated} mutants, sampled: 95 % CI {lo:.3f}-{hi:.3f})"
    of = f"{run} of the {drawn} sampled" if drawn is not None else f"{run} of {generated}"
    return f" ({of} mutants run, unfinished: the quickest first, not a random subset; no interval)"


def module_scores(killed: list[str], scored: list[str]) -> dict[str, tuple[int, int]]:
    """module -> (killed, scored) over `scored` (checked mutants less listed equivalents)."""
    dead = set(killed)
    out: dict[str, tuple[int, int]] = {}
    for name in scored:
        k, n = out.get(module_of(name), (0, 0))
        out[module_of(name)] = (k + (name in dead), n + 1)
    return dict(sorted(out.items()))


def drop_truncated_copies(root: Path) -> list[Path]:
    """Delete the mutated copies under `root`/mutants that an interrupted run left half-written; return them.

    mutmut writes a file's mutants straight into mutants/<file> and later trusts any copy newer than its
    source, so a run stopped (Ctrl-C, a kill) while it wrote one would leave that module empty or cut
    short for every later run. A copy that no longer parses is removed and so generated again."""
    import ast

    from mutmut.utils.file_utils import walk_mutatable_files

    dropped = []
    for source in walk_mutatable_files():
        copy = root / "mutants" / source
        if not copy.is_file():
            continue
        text = copy.read_text(encoding="utf-8", errors="replace")
        try:
            ast.parse(text)
            broken = not text.strip() and bool(source.read_text(encoding="utf-8").strip())
        except SyntaxError:
            broken = True
        if broken:
            copy.unlink()
            dropped.append(copy)
    return dropped


NO_MUTANT = "clinfuse.no-such-mutant"  # matches nothing: mutmut generates and maps the mutants, then stops


def _mutmut_run(names: list[str], max_children: int, log: Path) -> None:
    with open(log, "w") as fh:
        # mutmut with mutants named clinfuse.<folder>... as the tests import them (see mutmut_namespaced.py)
        code = subprocess.call([sys.executable, str(Path(__file__).with_name("mutmut_namespaced.py")), "run",
                                "--max-children", str(max_children), *names],
                               cwd=ROOT, env=_env(), stdout=fh, stderr=fh)
    # mutmut refuses a filter that matches nothing, after it has generated every mutant and collected
    # which tests reach each function: exactly the state a sampled run needs before it draws
    generated_only = names == [NO_MUTANT] and "nothing matches" in log.read_text()
    if code != 0 and not generated_only:
        print(log.read_text()[-3000:])
        sys.exit(f"mutmut run failed (exit {code}); full log: {log}")


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
    parser.add_argument("--sample", type=float, default=None, metavar="F",
                        help="run a seeded random fraction F (0 < F <= 1) of each module's mutants; each module's "
                             "score is printed with its 95 %% Wilson interval")
    parser.add_argument("--sample-seed", type=int, default=0, help="seed of the sample (default 0)")
    parser.add_argument("--sample-min", type=int, default=1, metavar="N",
                        help="at least N mutants of each module in the sample (all of a smaller module); default 1")
    args = parser.parse_args(argv)
    if args.sample is not None and not 0 < args.sample <= 1:
        parser.error(f"--sample must be in (0, 1], got {args.sample}")
    args.patterns = namespaced(args.patterns)

    os.chdir(ROOT)  # mutmut reads pyproject.toml and mutants/ from the working directory
    if args.fresh and not args.report_only:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    sample_file = ROOT / "mutants" / "sample.json"
    if not args.report_only and not args.spawned_only and not args.recheck:
        log = ROOT / "mutants" / "run.log"
        log.parent.mkdir(exist_ok=True)
        from mutmut.configuration import config

        # what mutmut copies beside the package (pyproject's also_copy and its own defaults); it copies a
        # nested file (".dvc/config") only into an existing folder
        for path in config().also_copy:
            (ROOT / "mutants" / path).parent.mkdir(parents=True, exist_ok=True)
        for copy in drop_truncated_copies(ROOT):
            print(f"{copy.relative_to(ROOT)}: left half-written by an interrupted run; generated again", flush=True)
        # an earlier invocation's passing stats run says nothing of today's code (mutmut_namespaced.py)
        (ROOT / "mutants" / "full-stats-passed").unlink(missing_ok=True)
        names = args.patterns
        # a run of named modules after a sampled run adds them to what is scored (whole modules: their
        # scores are complete, the others stay sampled); any other run starts a new set
        extends_sample = args.sample is None and bool(args.patterns) and not args.fresh and sample_file.is_file()
        if not extends_sample:
            sample_file.unlink(missing_ok=True)
        if args.sample is not None:
            # generate every mutant (and mutmut's test mapping) without running one, then draw the sample
            _mutmut_run([NO_MUTANT], args.max_children, log)
            names = sample_mutants([k for k in results() if selected(k, args.patterns)], args.sample,
                                   args.sample_seed, args.sample_min)
            sample_file.write_text(json.dumps({"fraction": args.sample, "seed": args.sample_seed,
                                               "minimum": args.sample_min, "mutants": names}, indent=1))
            print(f"sampled {len(names)} mutants ({args.sample:.0%} of each module, at least {args.sample_min}, "
                  f"seed {args.sample_seed})", flush=True)
        elif names:  # generate (and map) first, so that what is already decided can be told from what runs
            _mutmut_run([NO_MUTANT], args.max_children, log)
        decided = {k for k, (s, _) in results().items() if s not in NOT_RUN}
        _mutmut_run(names, args.max_children, log)
        if extends_sample:
            sample = json.loads(sample_file.read_text())
            sample["mutants"] = sorted(set(sample["mutants"]) | {k for k in results() if selected(k, names)})
            sample_file.write_text(json.dumps(sample, indent=1))
        # the mutants mutmut ran now (new, or their function changed): their extra verdicts are stale; a
        # mutant it had decided before keeps its re-check (same code, and tests are only ever added)
        ran = [k for k in results() if selected(k, names) and k not in decided]
        for name in VERDICT_FILES if ran else ():
            if (ROOT / "mutants" / name).is_file():
                Verdicts(name, ran).save({})

    every = {k: v for k, v in results().items() if selected(k, args.patterns)}
    found = every
    sample = json.loads(sample_file.read_text()) if sample_file.is_file() else None
    if sample is not None:  # a sampled run scores its sample only (the rest was never run)
        found = {k: v for k, v in found.items() if k in set(sample["mutants"])}
    status = {k: s for k, (s, _) in found.items()}
    checked = {k: v for k, v in status.items() if v not in NOT_RUN}
    killed = [k for k, v in checked.items() if v in KILLED]
    alive = sorted(k for k, v in checked.items() if v not in KILLED)
    table = equivalents()
    # listed equivalents are never re-run: no test can kill them, and a spawned-process test costs a minute
    equivalent = {k for k in alive if (function_of(k), mutated_lines(k, found[k][1])) in table}
    # verdicts of the spawned-process tests, then of tests written after mutmut's run (--recheck)
    spawned, rechecks = Verdicts("spawned-verdicts.json", args.patterns), Verdicts("recheck-verdicts.json", args.patterns)
    verdicts, rechecked = spawned.of(alive), rechecks.of(alive)
    if not args.report_only and not args.recheck:  # a re-check runs only the tests it is given
        for k in alive:
            if (k not in verdicts and k not in equivalent and not rechecked.get(k)
                    and any(k.startswith(prefix) for prefix in SPAWNED_TESTS)):
                verdicts[k] = killed_by_spawned_tests(k)
        spawned.save(verdicts)
    alive = credit(verdicts, alive, checked, killed, "killed (spawned-process test)")
    verdicts = rechecks.of(alive)
    if args.recheck:
        shutil.copytree(ROOT / "tests", ROOT / "mutants" / "tests", dirs_exist_ok=True)
        pending = [k for k in alive if not verdicts.get(k) and k not in equivalent]
        for i, k in enumerate(pending, 1):
            verdicts[k] = killed_by_tests(k, args.recheck)
            print(f"re-checked {i}/{len(pending)}: {k} {'killed' if verdicts[k] else 'survived'}", flush=True)
        rechecks.save(verdicts)
    alive = credit(verdicts, alive, checked, killed, "killed (re-checked)")
    listed, unexplained = [], []
    for k in alive:
        (listed if k in equivalent else unexplained).append((k, (function_of(k), mutated_lines(k, found[k][1]))))

    for k, (func, line) in unexplained:
        print(f"not killed ({checked[k]}): {k}\n    {func}: {line}")
    counts = {s: sum(v == s for v in checked.values()) for s in sorted(set(checked.values()))}
    print(f"mutants: {len(status)} ({len(status) - len(checked)} not run); "
          + ", ".join(f"{s} {n}" for s, n in counts.items())
          + f"; {len(listed)} survivors listed as equivalent in {EQUIVALENT.relative_to(ROOT)}, "
          f"{len(unexplained)} unexplained")
    listed_names = {k for k, _ in listed}
    generated = Counter(module_of(k) for k in every)
    drawn = Counter(module_of(k) for k in found) if sample is not None else None
    run_per_module = Counter(module_of(k) for k in checked)
    for module, (k, n) in module_scores(killed, [m for m in checked if m not in listed_names]).items():
        print(f"  {module}: {k}/{n} = {k / n if n else 0.0:.3f}"
              f"{coverage(run_per_module[module], generated[module], k, n, None if drawn is None else drawn[module])}")
    total = len(checked) - len(listed)
    drawn_as = "" if sample is None else (f"sample: {sample['fraction']:.0%} of each module's mutants"
                                          f"{f', at least {n}' if (n := sample.get('minimum', 1)) > 1 else ''}")
    if sample is not None and len(checked) < len(found):
        print(f"{drawn_as}, seed {sample['seed']}; unfinished "
              f"({len(checked)} of the {len(found)} sampled run): no interval for the whole")
    elif sample is not None:
        lo, hi = wilson_interval(len(killed), total)
        print(f"{drawn_as}, seed {sample['seed']}; 95 % CI of the score {lo:.3f}-{hi:.3f}")
    print(f"mutation score: {len(killed)}/{total} = {len(killed) / total if total else 0.0:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

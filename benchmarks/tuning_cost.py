"""Cost of the tuning protocol: `clinfuse tune --budget N` for several methods on one cohort.

Issue 28's figure: a budget of 8 trials x 3 methods (late_fusion, sam, masam) on the demo's
phenotype cohort. Each method's study runs as one `clinfuse tune` process plus `--workers - 1`
`clinfuse tune --worker` processes joining the same Optuna study (the documented way to use
several cores); the studies run one after another, as `dvc repro`'s tune stages do. Trials are
logged to a throw-away MLflow store under --work, never to the project's.

Per study: wall time, CPU time (user + sys of every process of the study, children included),
trials finished; then the total. Prints the table and a one-line summary last.

Usage (after `make demo`, which builds the cohort):
  python benchmarks/tuning_cost.py [--cohort data/processed/mimic-phenotype] [--methods late_fusion sam masam]
                                   [--budget 8] [--workers 2] [--work /tmp/clinfuse-tuning-cost]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def params_for_workers(source: Path, workers: int, work: Path) -> Path:
    """params.yaml with `train.num_threads` = cores // workers: two workers with the default 2 threads
    each on 2 cores oversubscribe the CPU (each trial took 5 times longer when measured that way)."""
    import yaml

    params = yaml.safe_load(source.read_text()) if source.is_file() else {}
    threads = max(1, (os.cpu_count() or 1) // workers)
    params.setdefault("train", {})["num_threads"] = threads
    out = work / "params.yaml"
    out.write_text(yaml.safe_dump(params, sort_keys=False))
    return out


def run_study(cohort: Path, method: str, budget: int, workers: int, out: Path, env: dict, log: Path,
              params: Path) -> dict:
    """One study: the selecting process and `workers - 1` joining workers, all waited for."""
    cli = [sys.executable, "-m", "clinfuse.pipeline", "--params", str(params), "tune", "--cohort", str(cohort),
           "--method", method, "--budget", str(budget), "--out", str(out)]
    started = time.perf_counter()
    with open(log, "ab") as fh:
        procs = [subprocess.Popen(cli, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)]
        time.sleep(3.0)  # the first process creates the study; workers join it
        procs += [subprocess.Popen([*cli, "--worker"], env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
                  for _ in range(workers - 1)]
        cpu, codes = 0.0, []
        for proc in procs:
            _, status, usage = os.wait4(proc.pid, 0)
            cpu += usage.ru_utime + usage.ru_stime
            codes.append(os.waitstatus_to_exitcode(status))
    wall = time.perf_counter() - started
    if any(codes):
        tail = log.read_text(errors="replace").splitlines()[-15:]
        sys.exit(f"tuning_cost: study {method} failed (exit codes {codes}); last lines of {log}:\n" + "\n".join(tail))
    trials = json.loads((out / "study.json").read_text())["trials"]
    complete = sum(t["state"] == "COMPLETE" for t in trials)
    return {"method": method, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "trials_complete": complete,
            "trials_other": len(trials) - complete}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", default="data/processed/mimic-phenotype")
    parser.add_argument("--methods", nargs="+", default=["late_fusion", "sam", "masam"])
    parser.add_argument("--budget", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="processes per study (one per core)")
    parser.add_argument("--work", default=None, help="folder for the studies and their MLflow store (default: a temp folder)")
    args = parser.parse_args()
    cohort = Path(args.cohort).resolve()
    if not (cohort / "manifest.json").is_file():
        sys.exit(f"tuning_cost: {cohort / 'manifest.json'}: missing; run `make demo` first (or pass --cohort)")
    work = Path(args.work or tempfile.mkdtemp(prefix="clinfuse-tuning-cost-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "PYTHONHASHSEED": "0",
           "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
    log = work / "tuning_cost.log"
    params = params_for_workers(ROOT / "params.yaml", args.workers, work)
    load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    rows = []
    for method in args.methods:
        print(f"tuning_cost: {method}: {args.budget} trials, {args.workers} processes ...", flush=True)
        rows.append(run_study(cohort, method, args.budget, args.workers, work / method, env, log, params))
        print(f"tuning_cost: {method}: {rows[-1]['wall_s']:.0f} s wall, {rows[-1]['cpu_s']:.0f} s CPU", flush=True)
    load_end = " ".join(f"{x:.2f}" for x in os.getloadavg())
    wall, cpu = sum(r["wall_s"] for r in rows), sum(r["cpu_s"] for r in rows)
    lines = [f"Tuning cost on {cohort.name}: budget {args.budget}, {args.workers} processes per study, "
             f"train.num_threads {max(1, (os.cpu_count() or 1) // args.workers)}, {os.cpu_count()} CPUs (load {load_start} at start, {load_end} at end)", "",
             "| method | trials complete (other) | wall s | CPU s | s wall per trial |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['method']} | {r['trials_complete']} ({r['trials_other']}) | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | "
              f"{r['wall_s'] / args.budget:.0f} |" for r in rows]
    lines.append(f"| **total** | | {wall:.0f} | {cpu:.0f} | |")
    (work / "tuning_cost.json").write_text(json.dumps({"rows": rows, "budget": args.budget,
                                                       "workers": args.workers}, indent=1) + "\n")
    print("\n".join(lines))
    print(f"\ntuning_cost: {args.budget} trials x {len(rows)} methods on {cohort.name} in "
          f"{wall / 60:.1f} min wall ({cpu / 60:.1f} CPU-min); log {log}")


if __name__ == "__main__":
    main()

"""Full-scale rehearsal: every stage on a MIMIC-IV v3.1 / MIMIC-CXR-JPG 2.1.0-sized synthetic export.

Stages, each in its own process (`clinfuse ...`, as `dvc repro` runs them):
  synth (skipped when the export of that size and seed is already there),
  etl mimic phenotype / mortality,
  train: one epoch, small preset, CPU, of late fusion, MASAM, IGM and DrFuse on each cohort,
  evaluate, analyze and report per cohort.
Per stage: wall time, CPU time (user + sys of the process and its children), peak RSS
(largest of the process and its children, from wait4) and disk written (bytes of the
stage's outputs), plus the input sizes (rows, files, bytes) and the machine's load.

Writes <work>/rehearsal.json and <work>/rehearsal.md and prints the Markdown table last.
Usage: python benchmarks/full_scale.py [--size tenth|hundredth|full] [--work DIR] [--methods ...]
  (--size tenth, about 43M chartevents rows and 1,900 films of 3056 x 2544 px, is the regular
  rehearsal; --size full writes about 22 GB and needs about 30 GB free under --work).
  --subjects N instead of --size: the demo's generator (64 px films, demo-sized chartevents) with N
  patients, for the stages that grow with the cohort rather than the raw export: 15,000 patients
  give a phenotype cohort of about 10,800 stays with a test split of about 2,166, the real
  cohort's (issue 29's evaluate / analyze / report targets; `--methods late_fusion sam masam`,
  the default sweep's three fusion methods).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["late_fusion", "masam", "igm", "drfuse"]  # one per method family
COHORTS = ["phenotype", "mortality"]
FULL_OVER = {"hundredth": 100, "tenth": 10, "full": 1}


def du(path: Path) -> int:
    """Bytes of the files under `path` (0 when absent)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_stage(name: str, cmd: list[str], outputs: list[Path], env: dict, log: Path) -> dict:
    """Run one stage in its own process; its wall/CPU time, peak RSS and output bytes."""
    print(f"rehearsal: {name}: {' '.join(cmd)}", flush=True)
    before = sum(du(p) for p in outputs)
    started = time.perf_counter()
    load_before = load()
    with open(log, "ab") as fh:
        fh.write(f"\n=== {name}: {' '.join(cmd)}\n".encode())
        fh.flush()
        # on a terminal the stage draws its own progress bars (counts, ETA) there; otherwise into the log
        out = None if sys.stdout.isatty() else fh
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    if code != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        sys.exit(f"rehearsal: stage {name} failed (exit {code}); last lines of {log}:\n" + "\n".join(tail))
    return {"stage": name, "wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024), "disk_written_mb": round((sum(du(p) for p in outputs) - before) / 1e6, 1),
            "load_before": load_before, "load_after": load()}


def write_params(work: Path, methods_run: list[str]) -> Path:
    """The rehearsal's params.yaml: paths under `work`, the methods x 2 MIMIC cohorts, 1 epoch on CPU."""
    params = work / "params.yaml"
    methods = ", ".join(methods_run)
    params.write_text(f"""# written by benchmarks/full_scale.py
paths:
  raw: {work / 'raw'}
  mimic_iv: {work / 'raw' / 'mimic-iv'}
  mimic_cxr: {work / 'raw' / 'mimic-cxr-jpg'}
  adni: {work / 'raw' / 'adni'}
  processed: {work / 'processed'}
  runs: {work / 'runs'}
  reports: {work / 'reports'}
sweep:
  cohorts: [mimic-phenotype, mimic-mortality]
  methods: [{methods}]
  seeds: [42]
train:
  epochs: 1
  device: cpu
""")
    return params


def export_ready(raw: Path, size: str, seed: int, subjects: int | None = None) -> bool:
    from clinfuse.etl.provenance import synthetic_marker

    if subjects:  # the demo generator's export records its patients, not a named size
        marker = synthetic_marker(raw / "mimic-iv")
        return bool(marker and marker.get("subjects") == subjects and marker.get("seed") == seed
                    and not marker.get("size") and (raw / "mimic-cxr-jpg").is_dir())
    markers = [synthetic_marker(raw / d) for d in ("mimic-iv", "mimic-cxr-jpg")]
    return all(m and m.get("size") == size and m.get("seed") == seed for m in markers)


def input_sizes(raw: Path, processed: Path) -> dict:
    import gzip

    from clinfuse.etl.provenance import synthetic_marker

    def rows(path: Path) -> int:
        with gzip.open(path, "rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 24), b"")) - 1

    iv = raw / "mimic-iv"
    films = list((raw / "mimic-cxr-jpg" / "files").rglob("*.jpg"))
    sizes = {"size": (synthetic_marker(iv) or {}).get("size"),
             "chartevents_gz_mb": round(du(iv / "icu" / "chartevents.csv.gz") / 1e6),
             "mimic_iv_mb": round(du(iv) / 1e6), "films": len(films),
             "films_mb": round(sum(p.stat().st_size for p in films) / 1e6)}
    for name in ("hosp/patients", "hosp/admissions", "icu/icustays"):
        sizes[name.split("/")[1]] = rows(iv / f"{name}.csv.gz")
    for cohort in COHORTS:
        manifest = processed / f"mimic-{cohort}" / "manifest.json"
        if manifest.is_file():
            m = json.loads(manifest.read_text())
            sizes[f"{cohort}_stays"] = m["n_samples"]
            sizes[f"{cohort}_split"] = "/".join(str(m["counts"][k]) for k in ("train", "val", "test"))
    return sizes


SCALES_WITH = {  # what each stage's time grows with, for reading a smaller rehearsal
    "synth": "chartevents rows and films (linear)",
    "etl": "chartevents rows (DuckDB pass) + paired films (decode)",
    "train": "cohort stays (one epoch)",
    "evaluate": "test stays x bootstrap resamples",
    "analyze": "fixed batches and samples (settings), not the cohort",
    "report": "test stays (plots) + runs",
}


def markdown(result: dict) -> str:
    lines = [f"Rehearsal at size **{result['size']}** on {result['machine']} "
             f"(load at start {result['load_start']}, at end {result['load_end']}; "
             # the load averages say how busy the machine was; "idle" is not assumed (other work may run niced)
             f"{'marked shared by --shared' if result['shared'] else 'not marked shared'}).", "",
             "| stage | wall s | CPU s (user+sys) | peak RSS MB | disk written MB | grows with |",
             "|---|---:|---:|---:|---:|---|"]
    for s in result["stages"]:
        kind = s["stage"].split(" ")[0]
        lines.append(f"| {s['stage']} | {s['wall_s']:.1f} | {s['cpu_s']:.1f} | {s['peak_rss_mb']} | "
                     f"{s['disk_written_mb']:.1f} | {SCALES_WITH.get(kind, '')} |")
    total_wall = sum(s["wall_s"] for s in result["stages"])
    total_cpu = sum(s["cpu_s"] for s in result["stages"])
    lines += [f"| **total** | {total_wall:.1f} | {total_cpu:.1f} | {max(s['peak_rss_mb'] for s in result['stages'])} | "
              f"{sum(s['disk_written_mb'] for s in result['stages']):.1f} | |", "",
              "Inputs: " + ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}"
                                     for k, v in result["inputs"].items())]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=list(FULL_OVER), default="tenth")
    parser.add_argument("--work", default=None, help="working folder (default: rehearsal/<size> in the checkout)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workers", type=int, default=2, help="synth generator processes")
    parser.add_argument("--shared", action="store_true", help="say in the table that the machine was shared")
    parser.add_argument("--subjects", type=int, default=None,
                        help="the demo generator with this many MIMIC patients instead of a named --size")
    parser.add_argument("--methods", nargs="+", default=METHODS, help=f"methods trained (default: {' '.join(METHODS)})")
    args = parser.parse_args()
    label = f"demo generator, {args.subjects:,} patients" if args.subjects else args.size
    work = Path(args.work or ROOT / "rehearsal" / (f"subjects-{args.subjects}" if args.subjects else args.size)).resolve()
    work.mkdir(parents=True, exist_ok=True)
    params = write_params(work, args.methods)
    log = work / "rehearsal.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "PYTHONHASHSEED": "0",
           "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "DVC_NO_ANALYTICS": "1"}
    cli = [sys.executable, "-m", "clinfuse.pipeline", "--params", str(params)]
    result = {"size": label, "machine": f"{platform.node()} ({os.cpu_count()} CPUs, "
              f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB)",
              "shared": args.shared, "load_start": load(), "stages": []}
    raw, processed, runs, reports = work / "raw", work / "processed", work / "runs", work / "reports"

    class Stages(list):
        """Each finished stage is saved at once, so a run stopped midway keeps its figures."""

        def append(self, stage):
            super().append(stage)
            (work / "rehearsal.json").write_text(json.dumps({**result, "complete": False}, indent=1) + "\n")

    stages = result["stages"] = Stages()
    if export_ready(raw, args.size, args.seed, args.subjects):
        print(f"rehearsal: reusing the {label} export in {raw}", flush=True)
    else:
        sized = ["--subjects", str(args.subjects)] if args.subjects else ["--size", args.size, "--workers", str(args.workers)]
        stages.append(run_stage("synth", [*cli, "synth", *sized, "--only", "mimic", "--seed", str(args.seed),
                                          "--out", str(raw)],
                                [raw], env, log))
    for cohort in COHORTS:
        out = processed / f"mimic-{cohort}"
        stages.append(run_stage(f"etl {cohort}", [*cli, "etl", "mimic", "--task", cohort, "--out", str(out)],
                                [out], env, log))
    for cohort in COHORTS:
        for method in args.methods:
            out = runs / f"mimic-{cohort}" / f"{method}-s42"
            stages.append(run_stage(f"train {cohort} {method}",
                                    [*cli, "train", "--cohort", str(processed / f"mimic-{cohort}"), "--method", method,
                                     "--seed", "42", "--epochs", "1", "--device", "cpu", "--fresh", "--out", str(out)],
                                    [out], env, log))
    for cohort in COHORTS:
        c_runs, c_reports = runs / f"mimic-{cohort}", reports / f"mimic-{cohort}"
        stages.append(run_stage(f"evaluate {cohort}", [*cli, "evaluate", "--runs-dir", str(c_runs), "--out",
                                                       str(c_reports / "runs")], [c_reports / "runs"], env, log))
        stages.append(run_stage(f"analyze {cohort}", [*cli, "analyze", "--runs-dir", str(c_runs), "--evaluations",
                                                      str(c_reports / "runs"), "--out", str(c_reports / "analysis")],
                                [c_reports / "analysis"], env, log))
        stages.append(run_stage(f"report {cohort}", [*cli, "report", "--cohort", str(processed / f"mimic-{cohort}"),
                                                     "--runs", str(c_reports / "runs"), "--analysis",
                                                     str(c_reports / "analysis"), "--out", str(c_reports)],
                                [c_reports / "report.html", c_reports / "plots", c_reports / "metrics.json"], env, log))
    result["load_end"] = load()
    result["inputs"] = input_sizes(raw, processed)
    (work / "rehearsal.json").write_text(json.dumps({**result, "complete": True}, indent=1) + "\n")
    table = markdown(result)
    (work / "rehearsal.md").write_text(table + "\n")
    print(f"rehearsal: log {log}; table {work / 'rehearsal.md'}, {work / 'rehearsal.json'}\n")
    print(table)


if __name__ == "__main__":
    main()

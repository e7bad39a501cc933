"""Speed and peak memory of synthetic exports: `clinfuse synth --size` (sized) or `--scale` (demo x K).

Each export runs in a fresh `clinfuse synth` process; CPU time counts its worker processes.
Prints one line per export:
  size=<s> rows=<n> seconds=<wall> cpu_s=<user+sys> rows_per_s=<r> peak_rss_mb=<m> written_mb=<d>
and last, for the largest sized export, the full size (432,997,491 rows) extrapolated from
its rows/s: extrapolated_full_minutes=<t> (target: <= 30).
Usage: python benchmarks/synth_scale.py [--sizes hundredth tenth] [--scales 10] [--subjects 400]
(--sizes includes the MIMIC-CXR films at their real 3056 x 2544 px; --scales writes MIMIC-IV only.)
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FULL_ROWS = 432_997_491


def run(args: list[str], out: Path) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "clinfuse.pipeline", "synth", "--out", str(out), *args],
                          capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    rows = int(re.search(r"([\d,]+) chartevents rows", proc.stdout).group(1).replace(",", ""))
    written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"rows": rows, "seconds": wall, "peak_rss_mb": after.ru_maxrss / 1024, "written_mb": written / 1e6,
            "cpu_s": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="*", default=["hundredth", "tenth"], choices=["hundredth", "tenth", "full"])
    parser.add_argument("--scales", type=int, nargs="*", default=[])
    parser.add_argument("--subjects", type=int, default=400)
    parser.add_argument("--tmp", default=None, help="folder for the exports (deleted after each)")
    args = parser.parse_args()
    print(f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs", flush=True)
    last = None
    jobs = [(f"size={s}", ["--size", s, "--only", "mimic"]) for s in args.sizes]
    jobs += [(f"scale={k}", ["--subjects", str(args.subjects), "--scale", str(k), "--only", "mimic"]) for k in args.scales]
    for label, cli in jobs:
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            r = run(cli, Path(tmp))
        print(f"{label} rows={r['rows']} seconds={r['seconds']:.1f} cpu_s={r['cpu_s']:.1f} "
              f"rows_per_s={r['rows'] / r['seconds']:.0f} peak_rss_mb={r['peak_rss_mb']:.0f} "
              f"written_mb={r['written_mb']:.0f}", flush=True)
        if label.startswith("size="):
            last = r
    if last:
        print(f"extrapolated_full_minutes={FULL_ROWS / (last['rows'] / last['seconds']) / 60:.1f} "
              f"(cpu {FULL_ROWS / last['rows'] * last['cpu_s'] / 60:.1f} CPU-minutes)")


if __name__ == "__main__":
    main()

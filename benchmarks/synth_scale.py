"""Streaming speed and peak memory of `clinfuse synth --scale` (synthetic chartevents).

Each size runs in a fresh process that reports its own peak RSS, so the figures
do not mix. Prints one line per size:
  rows=<n> seconds=<s> rows_per_s=<r> peak_rss_mb=<m>
Usage: python benchmarks/synth_scale.py [--scales 10 80] [--subjects 400]
(--scales 10 80 with 400 subjects writes about 6M and 50M chartevents rows).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from clinfuse.etl.synth.mimic import write_mimic_export
out, subjects, scale = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
t = time.perf_counter()
counts, _ = write_mimic_export(out, subjects, 42, scale)
seconds = time.perf_counter() - t
print(json.dumps({"rows": counts["icu/chartevents"], "seconds": seconds,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scales", type=int, nargs="+", default=[10, 80])
    parser.add_argument("--subjects", type=int, default=400)
    args = parser.parse_args()
    for scale in args.scales:
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run([sys.executable, "-c", CHILD, tmp, str(args.subjects), str(scale)],
                                  capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"rows={r['rows']} seconds={r['seconds']:.1f} rows_per_s={r['rows'] / r['seconds']:.0f} "
              f"peak_rss_mb={r['peak_rss_mb']:.0f}", flush=True)


if __name__ == "__main__":
    main()

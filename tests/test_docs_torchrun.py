"""The documented `torchrun ... -m <module> train` works from any folder, not only the repository root."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_documented_torchrun_names_a_module_importable_outside_the_checkout(tmp_path):
    modules = {m for doc in DOCS for m in re.findall(r"torchrun [^`\n]*?-m (\S+) train", doc.read_text())}
    assert modules == {"clinfuse.pipeline"}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for module in modules:  # what torchrun runs in each worker: python -m <module> train --help
        done = subprocess.run([sys.executable, "-m", module, "train", "--help"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "--cohort" in done.stdout, done.stderr[-500:]

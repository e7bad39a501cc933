"""A killed stage leaves no worker processes and no spill folders behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from clinfuse.etl.parallel import scratch_dir

ROOT = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); read its state
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_decoding_workers_exit_when_the_stage_is_killed(tmp_path):
    pids_file = tmp_path / "pids"
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from clinfuse.etl.parallel import map_in_chunks

        def slow(x):
            with open({str(pids_file)!r}, "a") as fh:
                fh.write(f"{{os.getpid()}}\\n")
            time.sleep(60)
            return x

        map_in_chunks(slow, list(range(8)), workers=2, chunk=1)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 30
    while time.time() < deadline and len(set(pids_file.read_text().split()) if pids_file.exists() else []) < 2:
        time.sleep(0.2)
    workers = {int(p) for p in pids_file.read_text().split()}
    assert len(workers) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.2)
    assert not any(_alive(p) for p in workers)


def test_spill_folders_of_killed_runs_are_removed_by_the_next_run(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    root = Path(tempfile.gettempdir())
    orphan = root / f"clinfuse-test-spill-{proc.pid}-abc"
    orphan.mkdir()
    (orphan / "duckdb_temp_block").write_bytes(b"x" * 10)
    mine = root / f"clinfuse-test-spill-{os.getpid()}-keep"
    mine.mkdir()
    try:
        with scratch_dir("clinfuse-test-spill-") as spill:
            assert spill.is_dir()
        assert not orphan.exists()
        assert mine.exists()
        assert not spill.exists()
    finally:
        mine.rmdir()

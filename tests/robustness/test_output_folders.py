"""--out never deletes what clinfuse did not write, and a swap killed half-way is recovered."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from clinfuse.etl.atomic import MARKER, atomic_dir, check_replaceable, output_kind, recover_dir
from clinfuse.etl.errors import InputError
from clinfuse.pipeline.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_folder_without_the_clinfuse_marker_is_refused_and_left_intact(tmp_path):
    raw = tmp_path / "mimic-iv"
    (raw / "hosp").mkdir(parents=True)
    (raw / "hosp" / "patients.csv.gz").write_bytes(b"precious")
    with pytest.raises(InputError, match="not a folder clinfuse wrote"):
        with atomic_dir(raw, "cohort") as tmp:
            (tmp / "x").write_text("new")
    assert (raw / "hosp" / "patients.csv.gz").read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mimic-iv"]


def test_an_output_of_another_kind_is_refused(tmp_path):
    with atomic_dir(tmp_path / "out", "evaluations") as tmp:
        (tmp / "metrics.json").write_text("{}")
    with pytest.raises(InputError, match="a clinfuse evaluations folder; refusing to replace it with a cohort"):
        check_replaceable(tmp_path / "out", "cohort")


def test_an_empty_folder_and_the_same_kind_are_replaced(tmp_path):
    (tmp_path / "empty").mkdir()
    with atomic_dir(tmp_path / "empty", "cohort") as tmp:
        (tmp / "a").write_text("1")
    assert output_kind(tmp_path / "empty") == "cohort"
    with atomic_dir(tmp_path / "empty", "cohort") as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == [MARKER, "b"]


def test_etl_out_pointing_at_a_raw_export_is_a_one_line_error_before_any_work(tmp_path, capsys):
    home = tmp_path / "myproject"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    code = main(["etl", "adni", "--adni", str(tmp_path / "nowhere"), "--out", str(home)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "refusing to replace" in err and str(home) in err
    assert (home / "notes.txt").read_text() == "mine"


def test_evaluate_out_pointing_at_a_report_folder_deletes_nothing(tmp_path, capsys):
    report = tmp_path / "reports" / "mimic-phenotype"
    report.mkdir(parents=True)
    (report / "report.html").write_text("<html>")
    (report / "registry.json").write_text("{}")
    run = tmp_path / "runs" / "masam-s42"
    run.mkdir(parents=True)
    code = main(["evaluate", "--run", str(run), "--out", str(report)])
    assert code == 2
    assert "refusing to replace" in capsys.readouterr().err
    assert sorted(p.name for p in report.iterdir()) == ["registry.json", "report.html"]


def test_a_kill_between_the_two_renames_is_completed_by_the_next_reader(tmp_path):
    """Real SIGKILL of a writer right after it moved the old folder aside."""
    out = tmp_path / "cohort"
    with atomic_dir(out, "cohort") as tmp:
        (tmp / "v").write_text("old")
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from clinfuse.etl import atomic
        real = os.replace
        def replace_then_die(src, dst):
            real(src, dst)
            if ".old-" in str(dst):
                os.kill(os.getpid(), signal.SIGKILL)
        atomic.os.replace = replace_then_die
        with atomic.atomic_dir({str(out)!r}, "cohort") as tmp:
            (tmp / "v").write_text("new")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9
    assert not out.exists()  # the state the kill leaves: old aside, new complete in a temp folder
    recover_dir(out)
    assert (out / "v").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]


def test_without_a_complete_new_folder_the_old_one_is_moved_back(tmp_path):
    out = tmp_path / "cohort"
    with atomic_dir(out, "cohort") as tmp:
        (tmp / "v").write_text("old")
    pid = _dead_pid()
    os.replace(out, tmp_path / f".cohort.old-{pid}")
    half = tmp_path / f".cohort.{pid}.abc123.tmp"  # a writer killed mid-work: no marker
    half.mkdir()
    (half / "v").write_text("half")
    recover_dir(out)
    assert (out / "v").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]


def test_temporary_folders_of_live_processes_are_not_touched(tmp_path):
    out = tmp_path / "cohort"
    live = tmp_path / f".cohort.{os.getpid()}.xyz.tmp"
    live.mkdir()
    recover_dir(out)
    assert live.exists()


def _tiny_filesystem(tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    return mount


def test_a_full_disk_is_a_one_line_error_naming_the_folder_and_keeps_the_previous_output(tmp_path):
    import numpy as np

    from clinfuse.etl.atomic import write_npy

    mount = _tiny_filesystem(tmp_path)
    try:
        out = mount / "cohort"
        with atomic_dir(out, "cohort") as tmp:
            (tmp / "v").write_text("old")
        with pytest.raises(InputError, match=r"tiny/.*cohort.*: no space left on the device \(.* MB free\)"):
            with atomic_dir(out, "cohort") as tmp:
                write_npy(tmp / "ehr.npy", np.zeros(1_000_000, dtype=np.float32))
        assert (out / "v").read_text() == "old"
        assert sorted(p.name for p in mount.iterdir()) == ["cohort"]
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_an_unwritable_output_location_is_refused_before_any_work(tmp_path, capsys):
    target = Path("/sys/kernel/clinfuse-out")  # read-only even for root in containers and on hosts
    try:
        Path("/sys/kernel/.clinfuse-probe").touch()
    except OSError:
        pass
    else:
        Path("/sys/kernel/.clinfuse-probe").unlink()
        pytest.skip("/sys/kernel is writable here")
    with pytest.raises(InputError, match="/sys/kernel.*cannot write here"):
        check_replaceable(target, "cohort")
    code = main(["etl", "adni", "--adni", str(tmp_path / "nowhere"), "--out", str(target)])
    assert code == 2 and "cannot write here" in capsys.readouterr().err

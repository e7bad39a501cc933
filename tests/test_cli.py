import subprocess
import sys

from pipeline.cli import main


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage: clinfuse" in capsys.readouterr().out


def test_bad_params_file_is_one_line_error_without_traceback(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("sed: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "--params", str(params), "etl", "mimic", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert "sed: unknown key" in proc.stderr


def test_debug_flag_shows_traceback(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("sed: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "--debug", "--params", str(params), "etl", "mimic"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr

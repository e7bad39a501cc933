import subprocess
import sys

from clinfuse.pipeline.cli import main


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage: clinfuse" in capsys.readouterr().out


def test_bad_params_file_is_one_line_error_without_traceback(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("sed: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "clinfuse.pipeline", "--params", str(params), "etl", "mimic", "--task", "phenotype",
         "--out", str(tmp_path / "o")],
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
        [sys.executable, "-m", "clinfuse.pipeline", "--debug", "--params", str(params), "etl", "mimic", "--task", "phenotype"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr


def test_every_design_command_has_help(capsys):
    import pytest

    for command in ("synth", "etl", "train", "evaluate", "report", "register", "predict", "summary"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
        assert f"usage: clinfuse {command}" in capsys.readouterr().out


def test_dvc_pipeline_resolves_with_the_repository_params():
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    dvc = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    proc = subprocess.run([dvc, "stage", "list"], cwd=root, capture_output=True, text=True,
                          env={**__import__("os").environ, "DVC_NO_ANALYTICS": "1"})
    assert proc.returncode == 0, proc.stderr
    for stage in ("synth", "etl_mimic@phenotype", "etl_adni", "train@mimic-phenotype-masam-42",
                  "evaluate@adni", "report@mimic-mortality", "register@mimic-phenotype"):
        assert stage in proc.stdout


def test_a_named_params_file_that_does_not_exist_is_a_one_line_error(tmp_path, capsys):
    missing = tmp_path / "typo-params.yaml"
    assert main(["--params", str(missing), "etl", "mimic", "--task", "phenotype", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and str(missing) in err and "not found" in err
    assert not (tmp_path / "o").exists()

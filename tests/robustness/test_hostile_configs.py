"""Hostile YAML and command lines: every mistake is one short line naming the file, key or flag."""

from __future__ import annotations

import fcntl
import threading
import time
from pathlib import Path

import pytest

from clinfuse.etl.errors import ConfigError, InputError
from clinfuse.pipeline.cli import main
from clinfuse.pipeline.config import load_params, read_yaml
from clinfuse.pipeline.tracking import lock_path, store_lock

SHORT = 1100  # characters: an error is one line a person reads (pipeline.cli caps it at 1000 and says how much)
ALIAS_BOMB = "".join(
    [f"a0: &a0 [{', '.join(['x'] * 9)}]\n"]
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 6)]
    + ["train:\n  epochs: *a5\n"]
)


def _params(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err[:2000]
    return err


def test_a_second_train_section_is_refused_naming_the_key_and_file(tmp_path):
    path = _params(tmp_path, "train:\n  epochs: 30\nsweep:\n  seeds: [1]\ntrain:\n  lr: 0.01\n")
    with pytest.raises(ConfigError, match=r"params.yaml: line 5: duplicate key 'train' \(first given at line 1\)"):
        load_params(path)


def test_a_key_given_twice_inside_a_section_is_refused(tmp_path):
    path = _params(tmp_path, "train:\n  epochs: 30\n  lr: 0.01\n  epochs: 2\n")
    with pytest.raises(ConfigError, match=r"line 4: duplicate key 'epochs'"):
        load_params(path)


def test_a_method_config_with_a_duplicated_option_is_refused(tmp_path):
    path = tmp_path / "masam_dup.yaml"
    path.write_text("method: masam\noptions:\n  rho: 0.1\n  rho: 0.5\n")
    with pytest.raises(ConfigError, match=r"masam_dup.yaml: line 4: duplicate key 'rho'"):
        read_yaml(path)


def test_anchors_and_merge_keys_still_work(tmp_path):
    path = _params(tmp_path, "base: &b {epochs: 3}\ntrain:\n  <<: *b\n  lr: 0.01\n")
    assert read_yaml(path)["train"] == {"epochs": 3, "lr": 0.01}


@pytest.mark.parametrize("value", ["true", "false", "yes"])
def test_a_boolean_is_not_a_number_of_epochs(tmp_path, value):
    with pytest.raises(ConfigError, match=r"train.epochs: .*not a boolean"):
        load_params(_params(tmp_path, f"train:\n  epochs: {value}\n"))


def test_a_boolean_is_not_a_learning_rate_or_a_seed(tmp_path):
    with pytest.raises(ConfigError, match=r"train.lr: .*not a boolean"):
        load_params(_params(tmp_path, "train:\n  lr: true\n"))
    with pytest.raises(ConfigError, match=r"sweep.seeds: .*not a boolean"):
        load_params(_params(tmp_path, "sweep:\n  seeds: [true]\n"))


def test_an_alias_bomb_is_refused_in_one_short_line(tmp_path, capsys):
    path = _params(tmp_path, ALIAS_BOMB)
    code = main(["--params", str(path), "train", "--cohort", str(tmp_path), "--method", "masam"])
    err = _one_line_error(capsys)
    assert code == 2 and "alias" in err and str(path) in err
    assert len(err) < 400


def test_a_huge_value_is_quoted_in_a_short_error(tmp_path, capsys):
    path = _params(tmp_path, "train:\n  epochs: [" + ", ".join(["123456"] * 50_000) + "]\n")
    code = main(["--params", str(path), "train", "--cohort", str(tmp_path), "--method", "masam"])
    err = _one_line_error(capsys)
    assert code == 2 and "train.epochs" in err and len(err) <= SHORT


def test_a_params_file_over_a_megabyte_is_refused(tmp_path):
    path = _params(tmp_path, "# " + "x" * (2 << 20) + "\n")
    with pytest.raises(ConfigError, match="at most"):
        load_params(path)


def test_a_params_file_that_is_not_utf8_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "params.yaml"
    path.write_bytes("train:\n  preset: t\xe9st\n".encode("latin-1"))
    code = main(["--params", str(path), "train", "--cohort", str(tmp_path), "--method", "masam"])
    err = _one_line_error(capsys)
    assert code == 2 and f"{path}: not UTF-8 text" in err


def test_an_error_message_with_newlines_prints_as_one_capped_line(capsys, monkeypatch):
    from clinfuse.pipeline.commands import evaluate

    def boom(args):
        raise InputError("first line\nsecond line " + "y" * 10_000)

    monkeypatch.setattr(evaluate, "run", boom)
    assert main(["evaluate", "--run", "x", "--out", "y"]) == 2
    err = _one_line_error(capsys)
    assert "first line second line" in err and len(err) <= SHORT


@pytest.mark.parametrize(("flag", "value", "key"), [("--epochs", "0", "train.epochs"),
                                                    ("--epochs", "-3", "train.epochs"),
                                                    ("--nproc", "0", "train.nproc")])
def test_out_of_range_command_line_overrides_are_one_line_errors(mimic_cohort, tmp_path, capsys, flag, value, key):
    code = main(["train", "--cohort", str(mimic_cohort), "--method", "late_fusion", flag, value,
                 "--out", str(tmp_path / "run"), "--no-tracking"])
    err = _one_line_error(capsys)
    assert code == 2 and f"{flag} {value}" in err and key in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("seed", [str(2**64), str(2**64 + 5), "-1"])
def test_a_seed_outside_32_bits_is_refused(mimic_cohort, tmp_path, capsys, seed):
    code = main(["train", "--cohort", str(mimic_cohort), "--method", "late_fusion", "--seed", seed,
                 "--out", str(tmp_path / "run"), "--no-tracking"])
    err = _one_line_error(capsys)
    assert code == 2 and f"--seed {seed}" in err
    assert not (tmp_path / "run").exists()


def test_a_sweep_seed_outside_32_bits_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"sweep.seeds.0"):
        load_params(_params(tmp_path, f"sweep:\n  seeds: [{2**70}]\n"))


def test_an_empty_sweep_seed_list_without_seed_is_a_one_line_error(mimic_cohort, tmp_path, capsys):
    path = _params(tmp_path, "sweep:\n  seeds: []\n")
    code = main(["--params", str(path), "train", "--cohort", str(mimic_cohort), "--method", "late_fusion",
                 "--out", str(tmp_path / "run"), "--no-tracking"])
    err = _one_line_error(capsys)
    assert code == 2 and "sweep.seeds is empty" in err and "--seed" in err


@pytest.mark.parametrize(("option", "value", "expected"), [("rho", "[0.1]", "a number"), ("rho", "true", "a number"),
                                                           ("aps", "1", "true or false"),
                                                           ("alpha", "'0.5'", "a number")])
def test_a_method_option_of_the_wrong_type_is_a_one_line_error(mimic_cohort, tmp_path, capsys, option, value,
                                                                expected):
    config = tmp_path / "masam_bad.yaml"
    config.write_text(f"method: masam\noptions:\n  {option}: {value}\n")
    code = main(["train", "--cohort", str(mimic_cohort), "--method", "masam_bad", "--config", str(config),
                 "--out", str(tmp_path / "run"), "--no-tracking"])
    err = _one_line_error(capsys)
    assert code == 2 and f"options.{option}: expected {expected}" in err and str(config) in err


def test_a_lambda_that_is_a_list_is_a_one_line_error(mimic_cohort, tmp_path, capsys):
    config = tmp_path / "sam_bad.yaml"
    config.write_text("method: sam\noptions:\n  lambda_m: [1.0]\n")
    code = main(["train", "--cohort", str(mimic_cohort), "--method", "sam_bad", "--config", str(config),
                 "--out", str(tmp_path / "run"), "--no-tracking"])
    err = _one_line_error(capsys)
    assert code == 2 and "lambda_m[ehr] must be a number" in err


def test_the_store_lock_waits_with_a_message_then_fails_naming_the_lock(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = lock_path(uri)
    with open(path, "a") as holder:  # another process's lock (flock locks are per open file)
        fcntl.flock(holder, fcntl.LOCK_EX)
        started = time.monotonic()
        with pytest.raises(InputError, match=rf"{path}: the MLflow store is still locked .* after 0.5 s"):
            with store_lock(uri, timeout=0.5):
                pass
        waited = time.monotonic() - started
    assert 0.4 < waited < 5
    assert "waiting for another process to release" in capsys.readouterr().err


def test_the_store_lock_is_taken_once_the_holder_releases_it(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    holder = open(lock_path(uri), "a")  # noqa: SIM115
    fcntl.flock(holder, fcntl.LOCK_EX)
    threading.Timer(0.3, holder.close).start()
    with store_lock(uri, timeout=10):
        pass


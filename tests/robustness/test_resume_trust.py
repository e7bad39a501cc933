"""Resume trusts only what the checkpoint itself records: its configuration and its cohort's content."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml

from clinfuse.etl.errors import ConfigError
from clinfuse.pipeline.checkpoints import CHECKPOINT_LAST, load_checkpoint
from clinfuse.pipeline.trainer import StopTraining, fit
from tests.training.test_trainer import spec


def _interrupted(cohort, run, **train):
    first = spec(cohort, "late_fusion", run, epochs=3)
    for key, value in train.items():
        setattr(first.settings, key, value)
    with pytest.raises(StopTraining):
        fit(first, track=False, stop_after_epoch=1)
    return run


def _with_lr(cohort, run, lr):
    again = spec(cohort, "late_fusion", run, epochs=3)
    again.settings.lr = lr
    return again


@pytest.mark.parametrize("damage", ["missing", "empty", "not yaml", "a list"])
def test_a_run_whose_config_yaml_is_lost_is_not_resumed_with_another_learning_rate(mimic_cohort, tmp_path, capsys,
                                                                                    damage):
    run = _interrupted(mimic_cohort, tmp_path / "run")
    config = run / "config.yaml"
    {"missing": lambda: config.unlink(), "empty": lambda: config.write_text(""),
     "not yaml": lambda: config.write_text("train: [unclosed\n"), "a list": lambda: config.write_text("- 1\n")}[damage]()
    summary = fit(_with_lr(mimic_cohort, run, 0.5), resume="auto", track=False)
    out = capsys.readouterr().out
    assert "same configuration" not in out
    assert "train.lr: 0.002 -> 0.5); starting afresh" in out
    assert summary["epochs_run"] == 3
    assert yaml.safe_load(config.read_text())["train"]["lr"] == 0.5
    assert load_checkpoint(run / CHECKPOINT_LAST)["config"]["train"]["lr"] == 0.5


def test_resume_insisted_on_names_the_changed_key_even_without_config_yaml(mimic_cohort, tmp_path):
    run = _interrupted(mimic_cohort, tmp_path / "run")
    (run / "config.yaml").unlink()
    with pytest.raises(ConfigError, match=r"cannot resume: .*train.lr: 0.002 -> 0.5"):
        fit(_with_lr(mimic_cohort, run, 0.5), resume=True, track=False)
    assert (run / CHECKPOINT_LAST).is_file()  # nothing of the interrupted run was lost


def test_an_edited_config_yaml_does_not_make_a_changed_run_resumable(mimic_cohort, tmp_path, capsys):
    run = _interrupted(mimic_cohort, tmp_path / "run")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["train"]["lr"] = 0.5  # made to agree with the new settings: the checkpoint still says 0.002
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    fit(_with_lr(mimic_cohort, run, 0.5), resume="auto", track=False)
    assert "train.lr: 0.002 -> 0.5); starting afresh" in capsys.readouterr().out


def test_a_run_without_config_yaml_but_the_same_settings_resumes(mimic_cohort, tmp_path, capsys):
    run = _interrupted(mimic_cohort, tmp_path / "run")
    (run / "config.yaml").unlink()
    summary = fit(_with_lr(mimic_cohort, run, 0.002), resume="auto", track=False)
    assert "resuming from checkpoint_last.pt (same configuration)" in capsys.readouterr().out
    assert summary["epochs_run"] == 3 and (run / "config.yaml").is_file()


def test_a_cohort_whose_content_changed_under_an_older_date_is_not_resumed(mimic_cohort, tmp_path, capsys):
    cohort = tmp_path / "cohort"
    shutil.copytree(mimic_cohort, cohort)
    run = _interrupted(cohort, tmp_path / "run")
    ehr = np.load(cohort / "ehr.npy")
    ehr[0] += 1.0
    stamp = (cohort / "ehr.npy").stat()
    np.save(cohort / "ehr.npy", ehr)
    import os

    os.utime(cohort / "ehr.npy", ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # copied back with its old date
    with pytest.raises(ConfigError, match=r"cannot resume: the cohort .* changed since the last checkpoint"):
        fit(_with_lr(cohort, run, 0.002), resume=True, track=False)
    fit(_with_lr(cohort, run, 0.002), resume="auto", track=False)
    assert "changed since the last checkpoint (content digest" in capsys.readouterr().out

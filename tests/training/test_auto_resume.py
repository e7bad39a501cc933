"""`clinfuse train` (and so `dvc repro`, which keeps run folders: persist) resumes an interrupted run of the
same configuration and starts a changed or finished one afresh."""

from __future__ import annotations

import json
import os

import pytest
import torch
import yaml

from clinfuse.etl.atomic import MARKER
from clinfuse.etl.errors import InputError
from clinfuse.pipeline.checkpoints import CHECKPOINT_LAST
from clinfuse.pipeline.inference import load_trained_model
from clinfuse.pipeline.trainer import StopTraining, fit
from tests.training.test_trainer import spec


def _same_weights(a, b) -> bool:
    ma, _ = load_trained_model(a)
    mb, _ = load_trained_model(b)
    return all(torch.equal(x, y) for x, y in zip(ma.state_dict().values(), mb.state_dict().values(), strict=True))


def test_an_interrupted_run_trained_again_resumes_and_ends_like_an_uninterrupted_one(mimic_cohort, tmp_path, capsys):
    full = fit(spec(mimic_cohort, "masam", tmp_path / "full", epochs=3), track=False)
    with pytest.raises(StopTraining):
        fit(spec(mimic_cohort, "masam", tmp_path / "killed", epochs=3), track=False, stop_after_epoch=1)
    again = fit(spec(mimic_cohort, "masam", tmp_path / "killed", epochs=3), resume="auto", track=False)
    assert "resuming from checkpoint_last.pt" in capsys.readouterr().out
    assert again["best_val_metric"] == full["best_val_metric"] and again["epochs_run"] == 3
    assert json.loads((tmp_path / "killed" / "history.json").read_text()) == json.loads(
        (tmp_path / "full" / "history.json").read_text())
    assert _same_weights(tmp_path / "full", tmp_path / "killed")


def test_an_interrupted_run_whose_configuration_changed_starts_afresh(mimic_cohort, tmp_path, capsys):
    with pytest.raises(StopTraining):
        fit(spec(mimic_cohort, "masam", tmp_path / "run", epochs=3), track=False, stop_after_epoch=1)
    (tmp_path / "run" / "leftover.txt").write_text("from the old run")
    changed = fit(spec(mimic_cohort, "masam", tmp_path / "run", epochs=2), resume="auto", track=False)
    assert "train.epochs: 3 -> 2" in capsys.readouterr().out
    assert not (tmp_path / "run" / "leftover.txt").exists()  # the old folder was removed, not reused
    fresh = fit(spec(mimic_cohort, "masam", tmp_path / "fresh", epochs=2), track=False)
    assert changed["best_val_metric"] == fresh["best_val_metric"] and changed["epochs_run"] == 2
    assert _same_weights(tmp_path / "run", tmp_path / "fresh")
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["epochs"] == 2


def test_a_finished_run_trained_again_starts_afresh(mimic_cohort, tmp_path, capsys):
    fit(spec(mimic_cohort, "late_fusion", tmp_path / "run", epochs=1), track=False)
    fit(spec(mimic_cohort, "late_fusion", tmp_path / "run", epochs=1), resume="auto", track=False)
    assert "the run had finished and is trained again; starting afresh" in capsys.readouterr().out
    assert (tmp_path / "run" / "train_summary.json").is_file()


def test_a_cohort_rebuilt_after_the_last_checkpoint_starts_afresh(mimic_cohort, tmp_path, capsys):
    with pytest.raises(StopTraining):
        fit(spec(mimic_cohort, "late_fusion", tmp_path / "run", epochs=2), track=False, stop_after_epoch=1)
    manifest = mimic_cohort / "manifest.json"
    saved = manifest.stat()
    later = (tmp_path / "run" / CHECKPOINT_LAST).stat().st_mtime + 5
    os.utime(manifest, (later, later))
    try:
        fit(spec(mimic_cohort, "late_fusion", tmp_path / "run", epochs=2), resume="auto", track=False)
    finally:
        os.utime(manifest, (saved.st_atime, saved.st_mtime))
    assert "was rebuilt after the last checkpoint; starting afresh" in capsys.readouterr().out


def test_a_folder_clinfuse_did_not_mark_is_never_removed(mimic_cohort, tmp_path):
    with pytest.raises(StopTraining):
        fit(spec(mimic_cohort, "late_fusion", tmp_path / "run", epochs=2), track=False, stop_after_epoch=1)
    (tmp_path / "run" / MARKER).unlink()
    with pytest.raises(InputError, match="no clinfuse run marker"):
        fit(spec(mimic_cohort, "late_fusion", tmp_path / "run", epochs=3), resume="auto", track=False)
    assert (tmp_path / "run" / CHECKPOINT_LAST).is_file()


def test_a_new_run_folder_is_marked_but_an_existing_foreign_one_is_not(mimic_cohort, tmp_path):
    fit(spec(mimic_cohort, "late_fusion", tmp_path / "new", epochs=1), track=False)
    assert json.loads((tmp_path / "new" / MARKER).read_text())["kind"] == "run"
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("keep me")
    fit(spec(mimic_cohort, "late_fusion", tmp_path / "theirs", epochs=1), track=False)
    assert not (tmp_path / "theirs" / MARKER).exists()


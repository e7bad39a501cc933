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
from clinfuse.pipeline.settings.train import TrainSettings
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



# --- the decision alone, on hand-made run folders (each needs only tmp_path) -------------------------------

SAVED = {"cohort": "c", "train": TrainSettings(lr=0.1).model_dump()}
CHANGED = {"cohort": "c", "train": {**SAVED["train"], "lr": 0.2}}


def _run_folder(path, checkpoint, marked=True, cohort_age=100.0):
    """A run folder holding `checkpoint` as its last one, and a cohort whose manifest is `cohort_age` seconds
    older than that checkpoint."""
    from clinfuse.etl.atomic import write_json
    from clinfuse.pipeline.checkpoints import save_checkpoint

    path.mkdir(parents=True)
    save_checkpoint(checkpoint, path / CHECKPOINT_LAST)
    if marked:
        write_json(path / MARKER, {"kind": "run", "written_by": "clinfuse"})
    cohort = path.parent / "cohort"
    cohort.mkdir(exist_ok=True)
    (cohort / "manifest.json").write_text("{}")
    stamp = os.stat(path / CHECKPOINT_LAST).st_mtime
    os.utime(cohort / "manifest.json", (stamp - cohort_age, stamp - cohort_age))
    return cohort


def _decide(out, cohort, config=SAVED, track=False, digest=None):
    import contextlib
    import io

    from clinfuse.pipeline.trainer import resume_or_start_afresh

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        decision = resume_or_start_afresh(out, config, cohort, track, digest)
    return decision, printed.getvalue()


def test_the_configuration_a_run_trained_with_is_its_checkpoints_else_a_valid_config_yaml(tmp_path):
    from clinfuse.pipeline.trainer import recorded_configuration

    (tmp_path / "config.yaml").write_text("train:\n  lr: 0.2  # é\n", encoding="utf-8")
    assert recorded_configuration(tmp_path, {"config": SAVED}) == SAVED  # the checkpoint wins over config.yaml
    assert recorded_configuration(tmp_path, {"config": None}) == {"train": {"lr": 0.2}}
    (tmp_path / "config.yaml").write_text("- a list\n")
    assert recorded_configuration(tmp_path, {}) is None
    (tmp_path / "config.yaml").write_bytes(b"train: \xff\n")
    assert recorded_configuration(tmp_path, {}) is None
    (tmp_path / "config.yaml").unlink()
    assert recorded_configuration(tmp_path, {}) is None


def test_a_checkpoint_without_a_configuration_or_of_another_cohort_content_is_not_resumed(tmp_path):
    from clinfuse.etl.errors import ConfigError
    from clinfuse.pipeline.trainer import check_checkpoint_resumable

    with pytest.raises(ConfigError) as err:
        check_checkpoint_resumable(tmp_path, {}, SAVED, None)
    assert str(err.value) == (f"cannot resume: {tmp_path / CHECKPOINT_LAST} does not record the configuration it "
                              "was trained with and config.yaml is missing or invalid; train into a new --out or "
                              "use --fresh")
    checkpoint = {"config": SAVED, "cohort_digest": "0123456789abcdef"}
    check_checkpoint_resumable(tmp_path, checkpoint, SAVED, "0123456789abcdef")
    check_checkpoint_resumable(tmp_path, checkpoint, SAVED, None)  # an unknown digest is not a change
    check_checkpoint_resumable(tmp_path, {"config": SAVED}, SAVED, "fedcba9876543210")
    with pytest.raises(ConfigError) as err:
        check_checkpoint_resumable(tmp_path, checkpoint, SAVED, "fedcba9876543210")
    assert str(err.value) == ("cannot resume: the cohort c changed since the last checkpoint (content digest "
                              "0123456789ab -> fedcba987654); train into a new --out or use --fresh")
    with pytest.raises(ConfigError, match=r"train.lr: 0.1 -> 0.2"):
        check_checkpoint_resumable(tmp_path, checkpoint, CHANGED, None)


def test_an_unfinished_run_of_the_same_configuration_resumes_and_without_a_checkpoint_none_does(tmp_path):
    cohort = _run_folder(tmp_path / "run", {"config": SAVED})
    assert _decide(tmp_path / "run", cohort) == (True, f"{tmp_path / 'run'}: resuming from {CHECKPOINT_LAST} "
                                                       "(same configuration)\n")
    assert (tmp_path / "run" / CHECKPOINT_LAST).is_file()
    assert _decide(tmp_path / "empty", cohort) == (False, "")
    # a checkpoint older than recording its configuration: config.yaml in the run folder says it
    old = _run_folder(tmp_path / "old" / "run", {})
    (tmp_path / "old" / "run" / "config.yaml").write_text(yaml.safe_dump(SAVED))
    assert _decide(tmp_path / "old" / "run", old)[0] is True
    # a cohort written in the same second as the checkpoint is not newer
    same = _run_folder(tmp_path / "same" / "run", {"config": SAVED}, cohort_age=0.0)
    assert _decide(tmp_path / "same" / "run", same)[0] is True


@pytest.mark.parametrize("case, reason", [
    ("finished", "the run had finished and is trained again"),
    ("rebuilt", "the cohort {cohort} was rebuilt after the last checkpoint"),
    ("changed", "the run's configuration changed (train.lr: 0.1 -> 0.2)"),
    ("other content", "the cohort c changed since the last checkpoint (content digest 0123456789ab -> fedcba987654)"),
])
def test_a_run_that_cannot_resume_is_removed_and_says_why_it_starts_afresh(tmp_path, case, reason):
    out = tmp_path / "run"
    cohort = _run_folder(out, {"config": SAVED, "cohort_digest": "0123456789abcdef"},
                         cohort_age=-100.0 if case == "rebuilt" else 100.0)
    if case == "finished":
        (out / "train_summary.json").write_text("{}")
    config = CHANGED if case == "changed" else SAVED
    digest = "fedcba9876543210" if case == "other content" else None
    assert _decide(out, cohort, config, digest=digest) == (False, f"{out}: {reason.format(cohort=cohort)}; "
                                                                  "starting afresh\n")
    assert not out.exists()


def test_a_folder_without_the_run_marker_is_refused_not_removed(tmp_path):
    out = tmp_path / "run"
    cohort = _run_folder(out, {"config": SAVED}, marked=False)
    (out / "train_summary.json").write_text("{}")
    with pytest.raises(InputError) as err:
        _decide(out, cohort)
    assert str(err.value) == (f"{out}: holds a checkpoint but no clinfuse run marker ({MARKER}); refusing to "
                              "replace it (remove it yourself or train into a new --out)")
    assert (out / CHECKPOINT_LAST).is_file()


def test_starting_afresh_marks_the_old_mlflow_run_only_when_tracking(tmp_path):
    from unittest import mock

    import clinfuse.pipeline.trainer as trainer

    marked = []
    for track in (False, True):
        out = tmp_path / str(track) / "run"
        cohort = _run_folder(out, {"config": SAVED})
        (out / "train_summary.json").write_text("{}")
        (out / "mlflow_run.json").write_text(json.dumps({"run_id": f"run-{track}"}))
        with mock.patch.object(trainer, "_mark_interrupted", marked.append):
            assert _decide(out, cohort, track=track)[0] is False
    assert marked == ["run-True"]

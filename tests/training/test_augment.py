"""Training-time random affine augmentation of image batches (train.augment)."""

from __future__ import annotations

import pytest
import torch
import yaml

from clinfuse.etl.errors import ConfigError
from clinfuse.pipeline.augment import BatchAugment
from clinfuse.pipeline.settings.train import AugmentSettings, TrainSettings
from clinfuse.pipeline.trainer import StopTraining, fit
from tests.training.test_trainer import spec

SHAPES = {"ehr": (48, 24), "cxr": (1, 32, 32)}


def batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    cxr = torch.zeros(4, 1, 32, 32)
    cxr[:, :, 8:20, 10:14] = torch.rand(4, 1, 1, 1, generator=g) + 0.2  # an off-centre bar per film
    return {"inputs": {"ehr": torch.randn(4, 48, 24, generator=g), "cxr": cxr},
            "present": {"ehr": torch.ones(4, dtype=torch.bool), "cxr": torch.tensor([True, True, False, True])},
            "y": torch.randint(0, 2, (4, 25), generator=g).float(), "index": torch.arange(4)}


def test_with_augmentation_off_the_batch_is_returned_untouched():
    b = batch()
    assert BatchAugment(TrainSettings().augment, 42, SHAPES)(b, 0) is b
    assert TrainSettings().augment.enabled is False  # off by default (the demo)


def test_with_augmentation_on_films_change_and_nothing_else_does():
    b = batch()
    out = BatchAugment(AugmentSettings(enabled=True), 42, SHAPES)(b, 7)
    assert out["inputs"]["cxr"].shape == b["inputs"]["cxr"].shape
    assert out["inputs"]["cxr"].dtype == b["inputs"]["cxr"].dtype
    changed = (out["inputs"]["cxr"] - b["inputs"]["cxr"]).abs().flatten(1).amax(1)
    assert bool((changed > 0.05).all())  # every film moved
    assert out["inputs"]["ehr"] is b["inputs"]["ehr"]
    assert out["y"] is b["y"] and out["present"] is b["present"] and out["index"] is b["index"]
    assert torch.equal(b["inputs"]["cxr"], batch()["inputs"]["cxr"])  # the caller's batch is not modified


def test_same_seed_and_step_give_the_same_films_other_steps_other_films():
    settings = AugmentSettings(enabled=True)
    a = BatchAugment(settings, 42, SHAPES)(batch(), 3)["inputs"]["cxr"]
    again = BatchAugment(settings, 42, SHAPES)(batch(), 3)["inputs"]["cxr"]
    later = BatchAugment(settings, 42, SHAPES)(batch(), 4)["inputs"]["cxr"]
    other_seed = BatchAugment(settings, 43, SHAPES)(batch(), 3)["inputs"]["cxr"]
    assert torch.equal(a, again)
    assert not torch.equal(a, later) and not torch.equal(a, other_seed)


def test_zero_ranges_leave_the_films_as_they_are():
    settings = AugmentSettings(enabled=True, rotate_degrees=0, scale=0, translate=0)
    b = batch()
    out = BatchAugment(settings, 1, SHAPES)(b, 0)
    torch.testing.assert_close(out["inputs"]["cxr"], b["inputs"]["cxr"], rtol=0, atol=1e-5)


def test_augmentation_leaves_torchs_random_stream_alone():
    torch.manual_seed(5)
    BatchAugment(AugmentSettings(enabled=True), 42, SHAPES)(batch(), 0)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(3), after)  # dropout masks do not depend on augmentation


def test_a_modality_that_is_not_an_image_is_a_config_error():
    with pytest.raises(ConfigError, match=r"train\.augment\.modalities: 'cxr' is not an image modality.*\['mri'\]"):
        BatchAugment(AugmentSettings(enabled=True), 0, {"tabular": (30,), "mri": (1, 8, 8, 8)})


def test_3d_volumes_are_augmented_too():
    mri = torch.zeros(2, 1, 12, 12, 12)
    mri[:, :, 3:8, 4:6, 2:9] = 1.0
    out = BatchAugment(AugmentSettings(enabled=True, modalities=["mri"]), 0, {"mri": (1, 12, 12, 12)})(
        {"inputs": {"mri": mri}, "present": {}, "y": torch.zeros(2)}, 0)
    assert out["inputs"]["mri"].shape == mri.shape and not torch.equal(out["inputs"]["mri"], mri)


def test_the_augmentation_settings_are_part_of_the_run_config(mimic_cohort, tmp_path):
    run = spec(mimic_cohort, "late_fusion", tmp_path / "aug", epochs=1)
    run.settings.augment = AugmentSettings(enabled=True, rotate_degrees=10)
    fit(run, track=False)
    config = yaml.safe_load((tmp_path / "aug" / "config.yaml").read_text())
    assert config["train"]["augment"] == {"enabled": True, "modalities": ["cxr"], "rotate_degrees": 10.0,
                                          "scale": 0.15, "translate": 0.15}


def test_a_killed_and_resumed_run_with_augmentation_ends_like_an_uninterrupted_one(mimic_cohort, tmp_path):
    def run(out):
        r = spec(mimic_cohort, "late_fusion", out, epochs=2)
        r.settings.augment = AugmentSettings(enabled=True)
        return r

    full = fit(run(tmp_path / "full"), track=False)
    with pytest.raises(StopTraining):
        fit(run(tmp_path / "killed"), track=False, stop_after_epoch=1)
    resumed = fit(run(tmp_path / "killed"), resume=True, track=False)
    assert resumed["best_val_metric"] == full["best_val_metric"]
    assert (tmp_path / "killed" / "history.json").read_text() == (tmp_path / "full" / "history.json").read_text()

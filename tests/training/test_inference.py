"""pipeline/inference.py: how a run's logits become the probabilities every consumer reads."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clinfuse.pipeline.data import load_cohort
from clinfuse.pipeline.inference import load_trained_model, predict_split, probabilities
from clinfuse.pipeline.trainer import fit
from tests.training.test_trainer import spec


def test_a_binary_task_gets_the_sigmoid_of_its_single_logit_not_a_softmax():
    # logit 0 -> 0.5, log 3 -> 0.75, -log 3 -> 0.25; a softmax over the one column would give 1.0 everywhere
    logits = torch.tensor([[0.0], [math.log(3.0)], [-math.log(3.0)]])
    assert probabilities(logits, "binary").flatten().tolist() == pytest.approx([0.5, 0.75, 0.25])


def test_a_multilabel_task_gets_one_sigmoid_per_label():
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert probabilities(logits, "multilabel").flatten().tolist() == pytest.approx([0.5, 0.75])


def test_a_multiclass_task_gets_the_softmax_over_its_classes():
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert probabilities(logits, "multiclass").flatten().tolist() == pytest.approx([0.25, 0.75])


def test_probabilities_upcast_half_precision_and_keep_float32_and_float64():
    logits = torch.tensor([[0.0, 1.0]])
    assert probabilities(logits.bfloat16(), "multilabel").dtype == torch.float32
    assert probabilities(logits, "multilabel").dtype == torch.float32
    assert probabilities(logits.double(), "multiclass").dtype == torch.float64


@pytest.fixture(scope="module")
def binary_run(binary_cohort, tmp_path_factory):
    """A trained run on the MIMIC fixture reduced to one label (tests/training/conftest.py)."""
    path = binary_cohort
    out = tmp_path_factory.mktemp("runs") / "late_fusion"
    fit(spec(path, "late_fusion", out, epochs=1), track=False)
    return path, out


def test_a_binary_run_predicts_the_sigmoid_of_its_fused_logit_for_each_test_stay(binary_run):
    cohort_dir, run = binary_run
    cohort = load_cohort(cohort_dir)
    rows, probs = predict_split(run, cohort, "test")
    assert probs.shape == (len(rows), 1)
    model, _ = load_trained_model(run)
    from clinfuse.pipeline.data import split_tensors

    batch = next(split_tensors(cohort, "test", "cpu").batches(len(rows)))  # the model's inputs, as trained
    with torch.no_grad():
        fused = model(batch["inputs"], batch["present"]).fused
    np.testing.assert_allclose(probs, torch.sigmoid(fused).numpy(), rtol=0, atol=1e-6)
    assert 0 < probs.min() and probs.max() < 1 and len(np.unique(probs)) > 1

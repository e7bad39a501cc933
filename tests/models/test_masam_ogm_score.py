"""MASAM's OGM-GE score (paper Table 8, 'OGM' row): the mean probability a modality's head gives the
correct answer, over the samples where that modality is present. Hand-computed on two samples."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from clinfuse.models.methods.masam import ogm_scores


def outputs(**unimodal):
    return SimpleNamespace(unimodal=unimodal)


def test_multiclass_score_is_the_softmax_probability_of_the_true_class_over_present_samples():
    out = outputs(a=torch.tensor([[0.0, 0.0, math.log(2.0)], [5.0, 0.0, 0.0]]),  # p(class 2) = 2/4
                  b=torch.tensor([[0.0, 0.0, 0.0], [math.log(3.0), 0.0, 0.0]]))  # 1/3 and p(class 0) = 3/5
    batch = {"y": torch.tensor([2, 0]), "present": {"a": torch.tensor([True, False]), "b": torch.tensor([True, True])}}
    scores = ogm_scores(out, batch, ["a", "b"], "multiclass")
    # a: only sample 0 is present (its second sample's 5.0 must not count); b: (1/3 + 3/5) / 2 = 7/15
    assert torch.allclose(scores, torch.tensor([0.5, 7 / 15]))


def test_multilabel_score_averages_each_labels_probability_of_the_right_answer():
    # sample 0: sigmoid(0) = 0.5 for a positive, 1 - sigmoid(ln 3) = 0.25 for a negative: 0.375
    # sample 1: sigmoid(ln 3) = 0.75 and 0.5 for two positives: 0.625
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), 0.0]])
    batch = {"y": torch.tensor([[1.0, 0.0], [1.0, 1.0]]),
             "present": {"a": torch.tensor([True, False]), "b": torch.tensor([True, True])}}
    scores = ogm_scores(outputs(a=logits, b=logits), batch, ["a", "b"], "multilabel")
    assert torch.allclose(scores, torch.tensor([0.375, 0.5]))


def test_a_modality_absent_from_the_whole_batch_scores_zero_not_nan():
    batch = {"y": torch.tensor([[1.0]]), "present": {"a": torch.tensor([False])}}
    assert ogm_scores(outputs(a=torch.tensor([[2.0]])), batch, ["a"], "binary").tolist() == [0.0]


def test_scores_are_in_the_logits_precision_whatever_the_labels_dtype():
    batch = {"y": torch.tensor([[1.0]], dtype=torch.float64), "present": {"a": torch.tensor([True])}}
    assert ogm_scores(outputs(a=torch.tensor([[0.0]])), batch, ["a"], "binary").dtype == torch.float32

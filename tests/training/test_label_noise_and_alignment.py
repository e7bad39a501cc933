"""Train-time label noise (paper Fig. 6) and the gradient-alignment probe (paper Fig. 15)."""

from __future__ import annotations

import numpy as np
import torch

from clinfuse.models.fusion import FusionModel
from clinfuse.pipeline.alignment import gradient_alignment
from clinfuse.pipeline.label_noise import flip_labels


def test_the_multilabel_flip_rate_is_exact_per_label_for_a_seed():
    y = (np.random.default_rng(0).random((200, 3)) > 0.7).astype(np.float32)
    noisy, flipped = flip_labels(y, 0.1, "multilabel", 3, seed=42)
    assert flipped == 60
    assert list((noisy != y).sum(axis=0)) == [20, 20, 20]
    again, _ = flip_labels(y, 0.1, "multilabel", 3, seed=42)
    assert np.array_equal(noisy, again)
    assert not np.array_equal(noisy, flip_labels(y, 0.1, "multilabel", 3, seed=43)[0])


def test_multiclass_noise_moves_exactly_the_rate_to_another_class():
    y = np.random.default_rng(1).integers(0, 3, size=90)
    noisy, flipped = flip_labels(y, 0.2, "multiclass", 3, seed=7)
    assert flipped == 18 and int((noisy != y).sum()) == 18
    assert set(np.unique(noisy)) <= {0, 1, 2}


def test_zero_noise_leaves_labels_untouched():
    y = np.ones((5, 1), dtype=np.float32)
    noisy, flipped = flip_labels(y, 0.0, "binary", 1, seed=0)
    assert flipped == 0 and np.array_equal(noisy, y)


class Linear(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.lin = torch.nn.Linear(d, 2, bias=False)
        self.out_dim = 2

    def forward(self, x):
        return self.lin(x)


def test_alignment_is_the_cosine_of_fused_and_unimodal_encoder_gradients_and_changes_no_state():
    torch.manual_seed(0)
    model = FusionModel({"a": Linear(3), "b": Linear(2)}, 1).double()
    batch = {"inputs": {"a": torch.randn(6, 3, dtype=torch.float64), "b": torch.randn(6, 2, dtype=torch.float64)},
             "present": {"a": torch.ones(6, dtype=torch.bool), "b": torch.ones(6, dtype=torch.bool)},
             "y": torch.tensor([[1.0], [0], [1], [0], [1], [1]], dtype=torch.float64)}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    gammas = gradient_alignment(model, batch, "binary")
    out = model(batch["inputs"], batch["present"])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    w = model.encoders["a"].lin.weight
    g_f = torch.autograd.grad(bce(out.fused, batch["y"]), w, retain_graph=True)[0].flatten()
    g_u = torch.autograd.grad(bce(out.unimodal["a"], batch["y"]), w)[0].flatten()
    assert torch.isclose(gammas["a"], g_f @ g_u / (g_f.norm() * g_u.norm()))
    assert set(gammas) == {"a", "b"}
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())

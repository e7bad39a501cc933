"""G-Blend (Wang, Tran and Feiszli, CVPR 2020): weights, held-out part, and the blended step."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from clinfuse.models.build import build_model
from clinfuse.models.methods import METHODS
from clinfuse.models.methods.gblend import blend_weights
from clinfuse.pipeline.data import SplitTensors
from tests.models.tiny_fusion import sgd, softmax, tiny_batch, tiny_model


def tiny_split(n=16, mods=("a", "v"), seed=3, groups=None):
    g = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn(n, 3, generator=g, dtype=torch.float64) for m in mods}
    present = {m: torch.ones(n, dtype=torch.bool) for m in mods}
    y = torch.randint(0, 3, (n,), generator=g)
    return SplitTensors(np.arange(n), inputs, present, y, groups)


def test_weights_are_generalisation_gain_over_squared_overfitting_gain_normalised():
    start_t = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    start_v = torch.tensor([1.1, 1.2, 1.0], dtype=torch.float64)
    end_t = torch.tensor([0.5, 0.8, 0.6], dtype=torch.float64)
    end_v = torch.tensor([0.9, 1.0, 0.8], dtype=torch.float64)
    # gain G = start_v - end_v = (0.2, 0.2, 0.2); O_end - O_start = (0.4 - 0.1, 0.2 - 0.2, 0.2 - 0.0)
    raw = np.array([0.2 / 0.3**2, 0.2 / 1e-8, 0.2 / 0.2**2])
    assert np.allclose(blend_weights(start_t, start_v, end_t, end_v).numpy(), raw / raw.sum(), rtol=1e-12)
    start_v2 = torch.tensor([1.1, 1.2, 1.4], dtype=torch.float64)
    end_v2 = torch.tensor([0.9, 1.0, 1.5], dtype=torch.float64)  # head 3 got worse on V: weight 0
    overfit = np.array([(0.9 - 0.5) - (1.1 - 1.0), (1.0 - 0.8) - (1.2 - 1.0)])
    raw2 = np.array([0.2 / overfit[0] ** 2, 0.2 / max(overfit[1] ** 2, 1e-8), 0.0])
    assert np.allclose(blend_weights(start_t, start_v2, end_t, end_v2).numpy(), raw2 / raw2.sum(), rtol=1e-12)


def test_weights_are_equal_when_no_head_generalises():
    same = torch.ones(3, dtype=torch.float64)
    assert torch.equal(blend_weights(same, same, same, same + 0.1), torch.full((3,), 1 / 3, dtype=torch.float64))


def test_with_equal_weights_the_step_is_late_fusions_divided_by_the_number_of_heads():
    model, batch = tiny_model(), tiny_batch()
    lf_model, gb_model = copy.deepcopy(model), copy.deepcopy(model)
    METHODS["late_fusion"](lf_model, sgd(lf_model, lr=0.1), "multiclass", lambda_m=1.0).step(batch)
    gb = METHODS["gblend"](gb_model, sgd(gb_model, lr=0.3), "multiclass")
    metrics = gb.step(batch)
    assert all(metrics[f"weight_{h}"].item() == pytest.approx(1 / 3) for h in ("fused", "a", "v"))
    for pa, pb in zip(lf_model.parameters(), gb_model.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-14)


def test_the_blended_loss_weights_each_heads_loss():
    model, batch = tiny_model(), tiny_batch()
    gb = METHODS["gblend"](model, sgd(model, lr=0.0), "multiclass")
    gb.weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    m = gb.step(batch)
    expected = 0.5 * m["loss_fuse"] + 0.3 * m["loss_a"] + 0.2 * m["loss_v"]
    assert m["loss_total"].item() == pytest.approx(expected.item(), rel=1e-12)


def test_held_out_patients_are_whole_a_fixed_share_and_reproducible():
    groups = np.repeat(np.arange(10), 2)  # 10 patients, two rows each
    split = tiny_split(20, groups=groups)
    model = tiny_model()
    mask = METHODS["gblend"](model, sgd(model), "multiclass", holdout_fraction=0.2).choose_holdout(split).numpy()
    assert mask.sum() == 4 and all(mask[groups == g].all() or not mask[groups == g].any() for g in range(10))
    again = METHODS["gblend"](model, sgd(model), "multiclass", holdout_fraction=0.2).choose_holdout(split).numpy()
    other = METHODS["gblend"](model, sgd(model), "multiclass", holdout_fraction=0.2, holdout_seed=5)
    assert np.array_equal(mask, again) and not np.array_equal(mask, other.choose_holdout(split).numpy())


def test_held_out_rows_never_reach_the_training_step():
    split = tiny_split(8)
    model = tiny_model()
    a_model, b_model = copy.deepcopy(model), copy.deepcopy(model)
    a = METHODS["gblend"](a_model, sgd(a_model), "multiclass")
    b = METHODS["gblend"](b_model, sgd(b_model), "multiclass")
    held = torch.tensor([False, True, False, False, True, False, False, False])
    a.holdout = b.holdout = held
    full = split.batch(torch.arange(8))
    changed = split.batch(torch.arange(8))
    changed["inputs"]["a"][held] = 100.0  # held-out rows' inputs and labels altered
    changed["y"][held] = (changed["y"][held] + 1) % 3
    a.step(full)
    b.step(changed)
    for pa, pb in zip(a_model.parameters(), b_model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    kept_model = copy.deepcopy(model)
    kept = METHODS["gblend"](kept_model, sgd(kept_model), "multiclass")  # no held-out part: every row trains
    kept.step(split.batch(torch.nonzero(~held).squeeze(1)))
    for pa, pb in zip(a_model.parameters(), kept_model.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-14)


def test_mean_losses_are_per_head_means_over_the_given_rows():
    split, model = tiny_split(8), tiny_model()
    gb = METHODS["gblend"](model, sgd(model), "multiclass", estimate_batch_size=3)
    rows = torch.tensor([0, 2, 3, 7])
    got = gb.mean_losses(model, split, rows).numpy()
    b = split.batch(rows)
    out = model.eval()(b["inputs"], b["present"])
    y = b["y"].numpy()
    for i, logits in enumerate([out.fused, out.unimodal["a"], out.unimodal["v"]]):
        expected = -np.log(softmax(logits.detach().numpy())[np.arange(4), y]).mean()
        assert got[i] == pytest.approx(expected, rel=1e-12)


def test_weights_are_re_estimated_at_each_super_epoch_only():
    split, model = tiny_split(16), tiny_model()
    gb = METHODS["gblend"](model, sgd(model, lr=0.05), "multiclass", super_epoch=2, estimate_batch_size=4)
    first = gb.on_epoch_start(0, split)
    assert set(first) == {"weight_fused", "weight_a", "weight_v"}
    assert sum(v.item() for v in first.values()) == pytest.approx(1.0)
    assert gb.on_epoch_start(1, split) == {}
    assert set(gb.on_epoch_start(2, split)) == set(first)


SPEC = {
    "ehr": {"name": "ehr_transformer", "d_model": 8, "nhead": 2, "num_layers": 1, "dropout": 0.5},
    "cxr": {"name": "small_cnn", "channels": [4], "out_dim": 8},
}


def test_estimation_runs_leave_the_main_network_batchnorm_and_random_stream_untouched():
    torch.manual_seed(0)
    model = build_model(SPEC, ["ehr", "cxr"], {"ehr": (48, 24), "cxr": (1, 16, 16)}, 3)
    n = 12
    g = torch.Generator().manual_seed(0)
    split = SplitTensors(np.arange(n), {"ehr": torch.randn(n, 48, 24, generator=g),
                                        "cxr": torch.randint(0, 255, (n, 16, 16), generator=g, dtype=torch.uint8)},
                         {m: torch.ones(n, dtype=torch.bool) for m in ("ehr", "cxr")},
                         (torch.rand(n, 3, generator=g) > 0.5).float())
    before = copy.deepcopy(model.state_dict())
    gb = METHODS["gblend"](model, torch.optim.AdamW(model.parameters(), lr=1e-2), "multilabel",
                           super_epoch=1, estimate_batch_size=4)
    torch.manual_seed(99)
    gb.on_epoch_start(0, split)
    after_rng = torch.rand(1)
    torch.manual_seed(99)
    assert torch.equal(after_rng, torch.rand(1))  # the estimate drew from its own stream
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_state_round_trip_keeps_weights_and_the_held_out_rows():
    split, model = tiny_split(16), tiny_model()
    a = METHODS["gblend"](model, sgd(model, lr=0.05), "multiclass", super_epoch=3, estimate_batch_size=4)
    a.on_epoch_start(0, split)
    b = METHODS["gblend"](tiny_model(), sgd(model), "multiclass", super_epoch=3)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.weights, b.weights) and torch.equal(a.holdout, b.holdout)
    with pytest.raises(ValueError, match="held-out mask covers 16 rows"):
        b.on_epoch_start(1, tiny_split(10))

"""MedFuse: the fusion LSTM reads only the present modalities; staged training; exact resume."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from clinfuse.models.losses import task_loss
from clinfuse.models.methods import METHODS
from clinfuse.models.methods.medfuse import MedFuseModel

F64 = torch.float64


class LinearEncoder(nn.Module):
    def __init__(self, n_in: int, out_dim: int):
        super().__init__()
        self.out_dim = out_dim
        self.net = nn.Linear(n_in, out_dim, dtype=F64)

    def forward(self, x):
        return torch.tanh(self.net(x))


def tiny_model(seed: int = 0) -> MedFuseModel:
    torch.manual_seed(seed)
    return MedFuseModel({"ehr": LinearEncoder(3, 4), "cxr": LinearEncoder(5, 6)}, num_outputs=2, hidden=3).double()


def tiny_batch(cxr_present=(True, False, True, False)):
    g = torch.Generator().manual_seed(1)
    n = len(cxr_present)
    return {"inputs": {"ehr": torch.randn(n, 3, generator=g, dtype=F64), "cxr": torch.randn(n, 5, generator=g, dtype=F64)},
            "present": {"ehr": torch.ones(n, dtype=torch.bool), "cxr": torch.tensor(cxr_present)},
            "y": (torch.rand(n, 2, generator=g) > 0.5).to(F64)}


def reference_lstm(model: MedFuseModel, sequence: torch.Tensor) -> torch.Tensor:
    """torch's nn.LSTM with the fusion cell's weights, run over a `[1, T, width]` sequence: its last state's logits."""
    cell = model.fusion_lstm
    lstm = nn.LSTM(cell.input_size, cell.hidden_size, batch_first=True, dtype=F64)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(lstm, f"{name}_l0").copy_(getattr(cell, name))
    _, (h, _) = lstm(sequence)
    return model.classifier(h[-1])


def test_fusion_sequence_length_follows_modality_presence():
    model, batch = tiny_model().eval(), tiny_batch()
    out = model(batch["inputs"], batch["present"])
    assert out.extras["sequence_length"].tolist() == [2, 1, 2, 1]
    for i, paired in enumerate(batch["present"]["cxr"].tolist()):
        z_ehr = out.features["ehr"][i : i + 1]
        tokens = [z_ehr, model.projections["cxr"](out.features["cxr"][i : i + 1])] if paired else [z_ehr]
        expected = reference_lstm(model, torch.stack(tokens, dim=1))
        assert torch.allclose(out.fused[i : i + 1], expected, atol=1e-12), i


def test_ehr_only_output_does_not_depend_on_the_absent_image_tensor():
    model, batch = tiny_model().eval(), tiny_batch()
    other = copy.deepcopy(batch)
    absent = ~batch["present"]["cxr"]
    other["inputs"]["cxr"][absent] = 1e3 * torch.randn(int(absent.sum()), 5, dtype=F64)
    a = model(batch["inputs"], batch["present"]).fused
    b = model(other["inputs"], other["present"]).fused
    assert torch.equal(a[absent], b[absent])
    assert not torch.equal(a, model(batch["inputs"], {**batch["present"], "cxr": torch.ones(4, dtype=torch.bool)}).fused)


def test_a_stay_without_a_film_is_not_read_as_a_zero_image():
    model, batch = tiny_model().eval(), tiny_batch()
    zero = copy.deepcopy(batch)
    zero["inputs"]["cxr"][:] = 0
    all_present = {**batch["present"], "cxr": torch.ones(4, dtype=torch.bool)}
    shortened = model(batch["inputs"], batch["present"]).fused[1]
    zero_image = model(zero["inputs"], all_present).fused[1]
    assert not torch.allclose(shortened, zero_image)


def make_method(model, pretrain_epochs=1):
    return METHODS["medfuse"](model, torch.optim.SGD(model.parameters(), lr=0.5), "multilabel",
                              pretrain_epochs=pretrain_epochs)


def fusion_parameters(model):
    return [*model.projections.parameters(), *model.fusion_lstm.parameters(), *model.classifier.parameters()]


def test_pretraining_epochs_train_encoders_and_unimodal_heads_on_their_masked_losses_only():
    model, batch = tiny_model(), tiny_batch()
    method = make_method(model, pretrain_epochs=2)
    before = copy.deepcopy(model)
    assert method.on_epoch_start(1, None)["pretraining"] == 1
    metrics = method.step(batch)
    out = before(batch["inputs"], batch["present"])
    l_ehr = task_loss(out.unimodal["ehr"], batch["y"], "multilabel")
    l_cxr = task_loss(out.unimodal["cxr"][[0, 2]], batch["y"][[0, 2]], "multilabel")  # films of rows 0 and 2 only
    assert torch.allclose(metrics["loss_total"], l_ehr + l_cxr, atol=1e-12)
    for p, q in zip(fusion_parameters(model), fusion_parameters(before), strict=True):
        assert torch.equal(p, q)
    for m in ("ehr", "cxr"):
        assert not torch.equal(model.encoders[m].net.weight, before.encoders[m].net.weight)
        assert not torch.equal(model.unimodal_heads[m].weight, before.unimodal_heads[m].weight)


def test_the_cxr_head_learns_nothing_from_stays_without_a_film():
    batch = tiny_batch()
    relabelled = copy.deepcopy(batch)
    relabelled["y"][[1, 3]] = 1 - relabelled["y"][[1, 3]]  # the stays without a film
    a, b = tiny_model(), tiny_model()
    for model, data in ((a, batch), (b, relabelled)):
        method = make_method(model)
        method.on_epoch_start(0, None)
        method.step(data)
    assert torch.equal(a.unimodal_heads["cxr"].weight, b.unimodal_heads["cxr"].weight)
    assert not torch.equal(a.unimodal_heads["ehr"].weight, b.unimodal_heads["ehr"].weight)


def test_after_pretraining_the_fused_loss_trains_every_part():
    model, batch = tiny_model(), tiny_batch()
    method = make_method(model, pretrain_epochs=1)
    before = copy.deepcopy(model)
    assert method.on_epoch_start(1, None)["pretraining"] == 0
    metrics = method.step(batch)
    expected = task_loss(before(batch["inputs"], batch["present"]).fused, batch["y"], "multilabel")
    assert torch.allclose(metrics["loss_total"], expected, atol=1e-12)
    for p, q in zip(fusion_parameters(model), fusion_parameters(before), strict=True):
        assert not torch.equal(p, q)
    assert not torch.equal(model.encoders["cxr"].net.weight, before.encoders["cxr"].net.weight)


def test_negative_pretrain_epochs_are_refused():
    model = tiny_model()
    with pytest.raises(ValueError, match="pretrain_epochs"):
        make_method(model, pretrain_epochs=-1)


def test_killed_during_pretraining_and_resumed_run_ends_like_an_uninterrupted_one(tmp_path):
    from clinfuse.pipeline.inference import load_trained_model
    from clinfuse.pipeline.trainer import StopTraining, fit
    from tests.fixtures.cohorts import write_cohort
    from tests.training.test_trainer import spec

    cohort = write_cohort(tmp_path / "mimic-phenotype", "mimic", n=32, missing_image=0.5)

    def run(out, **kw):
        s = spec(cohort, "medfuse", out, epochs=3)
        s.method.options["pretrain_epochs"] = 2
        return fit(s, track=False, **kw)

    full = run(tmp_path / "full")
    history = json.loads((tmp_path / "full" / "history.json").read_text())
    assert [h["train_pretraining"] for h in history] == [1.0, 1.0, 0.0]  # the trainer's on_epoch_start drives it
    with pytest.raises(StopTraining):
        run(tmp_path / "killed", stop_after_epoch=1)
    resumed = run(tmp_path / "killed", resume=True)
    assert resumed["best_val_metric"] == full["best_val_metric"]
    assert json.loads((tmp_path / "killed" / "history.json").read_text()) == json.loads(
        (tmp_path / "full" / "history.json").read_text())
    a, _ = load_trained_model(tmp_path / "full")
    b, _ = load_trained_model(tmp_path / "killed")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def test_trains_on_the_multiclass_tabular_and_mri_cohort_and_exports(tmp_path):
    from clinfuse.models.export import ExportableFusion
    from clinfuse.pipeline.data import load_cohort
    from clinfuse.pipeline.inference import load_trained_model, predict_split
    from clinfuse.pipeline.trainer import fit
    from tests.fixtures.cohorts import write_cohort
    from tests.training.test_trainer import spec

    cohort = write_cohort(tmp_path / "adni", "adni", n=24, missing_image=0.4)
    s = spec(cohort, "medfuse", tmp_path / "run", epochs=2)
    s.method.options["pretrain_epochs"] = 1
    fit(s, track=False)
    rows, probs = predict_split(tmp_path / "run", load_cohort(cohort), "test")
    assert probs.shape == (len(rows), 3) and abs(probs.sum(1) - 1).max() < 1e-5
    model, _ = load_trained_model(tmp_path / "run")
    wrapped = ExportableFusion(model, "multiclass").eval()
    args = (torch.randn(2, 6), torch.rand(2, 1, 8, 8, 8), torch.ones(2), torch.tensor([1.0, 0.0]))
    exported = torch.export.export(wrapped, args)
    assert torch.allclose(exported.module()(*args), wrapped(*args), atol=1e-6)


def test_a_refused_option_value_is_a_one_line_error(tmp_path, capsys):
    from clinfuse.pipeline.cli import main
    from tests.fixtures.cohorts import write_cohort

    cohort = write_cohort(tmp_path / "mimic-phenotype", "mimic", n=12)
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: medfuse\noptions:\n  pretrain_epochs: -2\n")
    code = main(["train", "--cohort", str(cohort), "--method", "medfuse", "--config", str(bad), "--no-tracking",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "pretrain_epochs must be >= 0" in err and err.count("\n") == 1

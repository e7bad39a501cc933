"""pipeline/inference.py: how a run's logits become the probabilities every consumer reads."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clinfuse.pipeline.data import load_cohort, split_tensors
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
    batch = next(split_tensors(cohort, "test", "cpu").batches(len(rows)))  # the model's inputs, as trained
    with torch.no_grad():
        fused = model(batch["inputs"], batch["present"]).fused
    np.testing.assert_allclose(probs, torch.sigmoid(fused).numpy(), rtol=0, atol=1e-6)
    assert 0 < probs.min() and probs.max() < 1 and len(np.unique(probs)) > 1


def test_a_unimodal_run_predicts_with_its_modality_s_head_and_every_other_run_with_the_fused_logits():
    from clinfuse.models.fusion import FusionOutput
    from clinfuse.pipeline.inference import prediction_head, select_logits
    from clinfuse.pipeline.settings.methods import MethodConfig

    assert prediction_head(MethodConfig(method="unimodal", options={"modality": "cxr"})) == "unimodal:cxr"
    assert prediction_head(MethodConfig(method="late_fusion")) == "fused"
    fused, ehr, cxr = torch.zeros(1, 1), torch.ones(1, 1), torch.full((1, 1), 2.0)
    out = FusionOutput(fused, {"ehr": ehr, "cxr": cxr, "cxr:lateral": -cxr}, {})
    assert select_logits(out, "fused") is fused and select_logits(out, "unimodal:cxr") is cxr
    # the modality is everything after the first colon
    assert select_logits(out, "unimodal:cxr:lateral").item() == -2.0


def test_bf16_autocast_is_asked_for_only_on_cuda_and_only_when_enabled():
    import contextlib
    import warnings

    from clinfuse.pipeline.inference import autocast

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # built on a machine without CUDA, torch disables it (with a warning)
        on = autocast(torch.device("cuda"), True)
    assert isinstance(on, torch.autocast) and (on.device, on.fast_dtype) == ("cuda", torch.bfloat16)
    for device, enabled in (("cuda", False), ("cpu", True), ("cpu", False)):
        assert isinstance(autocast(torch.device(device), enabled), contextlib.nullcontext)


def _untrained_run(tmp_path, method: str = "late_fusion", options: dict | None = None, kind: str = "mimic"):
    """A fixture cohort (`kind`: mimic or adni) and a run folder as `clinfuse train` leaves it (config.yaml, checkpoint_best.pt),
    holding a freshly initialised model; returns (run, cohort, that model in eval mode)."""
    import yaml

    from clinfuse.models.build import build_model
    from clinfuse.pipeline.inference import prediction_head
    from clinfuse.pipeline.settings.methods import MethodConfig
    from tests.fixtures.cohorts import write_cohort
    from tests.training.test_trainer import TINY

    cohort = load_cohort(write_cohort(tmp_path / "cohort", kind))
    options = options or {}
    shapes = {m: list(cohort.input_shape(m)) for m in cohort.modalities}
    encoders = {m: TINY[m] for m in cohort.modalities}
    torch.manual_seed(0)
    model = build_model(encoders, cohort.modalities, {m: tuple(s) for m, s in shapes.items()}, cohort.num_outputs,
                        method=method, task_type=cohort.task_type, options=options)
    run = tmp_path / "run"
    run.mkdir()
    config = {"modalities": cohort.modalities, "input_shapes": shapes, "label_names": cohort.label_names,
              "task_type": cohort.task_type, "encoders": encoders, "method": {"method": method, "options": options},
              "prediction_head": prediction_head(MethodConfig(method=method, options=options))}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    torch.save({"model": model.state_dict()}, run / "checkpoint_best.pt")
    return run, cohort, model.eval()


def _probabilities_of(model, cohort, split: str, head: str = "fused", withhold: tuple[str, ...] = ()) -> np.ndarray:
    """The model's probabilities for a whole split in one batch, `withhold` made absent by hand."""
    tensors = split_tensors(cohort, split, "cpu")
    batch = next(tensors.batches(len(tensors)))
    for m in withhold:
        batch["inputs"][m] = torch.zeros_like(batch["inputs"][m])
        batch["present"][m] = torch.zeros_like(batch["present"][m])
    with torch.no_grad():
        out = model(batch["inputs"], batch["present"])
    logits = out.fused if head == "fused" else out.unimodal[head.split(":", 1)[1]]
    return probabilities(logits, cohort.task_type).numpy()


def test_a_run_folder_predicts_each_row_of_a_split_in_order_with_the_weights_it_saved(tmp_path):
    run, cohort, model = _untrained_run(tmp_path)
    loaded, config = load_trained_model(run)
    assert not loaded.training and config["prediction_head"] == "fused"
    rows, probs = predict_split(run, cohort, "test", batch_size=3)  # several batches, the last one short
    np.testing.assert_array_equal(rows, cohort.rows("test"))
    assert probs.dtype == np.float32 and probs.shape == (len(rows), 3)
    np.testing.assert_allclose(probs, _probabilities_of(model, cohort, "test"), rtol=0, atol=1e-6)


def test_withholding_a_modality_predicts_as_if_no_sample_had_it(tmp_path):
    run, cohort, model = _untrained_run(tmp_path)
    _, full = predict_split(run, cohort, "train")
    _, without = predict_split(run, cohort, "train", withhold=("cxr",))
    np.testing.assert_allclose(without, _probabilities_of(model, cohort, "train", withhold=("cxr",)), rtol=0, atol=1e-6)
    assert np.abs(without - full).max() > 1e-4  # the films did count


def test_a_unimodal_run_folder_predicts_with_its_modality_s_own_head(tmp_path):
    run, cohort, model = _untrained_run(tmp_path, "unimodal", {"modality": "ehr"})
    rows, probs = predict_split(run, cohort, "test")
    np.testing.assert_allclose(probs, _probabilities_of(model, cohort, "test", "unimodal:ehr"), rtol=0, atol=1e-6)


def test_a_run_folder_without_its_best_checkpoint_is_named(tmp_path):
    from clinfuse.etl.errors import InputError

    (tmp_path / "config.yaml").write_text("modalities: [ehr]\n")
    with pytest.raises(InputError, match=r"checkpoint_best.pt: missing; expected a finished training run folder$"):
        load_trained_model(tmp_path)


def _saved_as_on_a_gpu(path):
    """Rewrite a checkpoint as a GPU saves it: every tensor tagged with the location cuda:0, which torch.load
    restores there unless told where to map it (a CPU-only machine then refuses it)."""
    import torch.serialization as serialization

    checkpoint = torch.load(path, weights_only=True)
    registry = list(serialization._package_registry)
    serialization.register_package(0, lambda storage: "cuda:0", lambda storage, location: None)
    try:
        torch.save(checkpoint, path)
    finally:
        serialization._package_registry[:] = registry


def test_a_checkpoint_saved_on_a_gpu_loads_on_a_machine_without_one(tmp_path):
    run, cohort, model = _untrained_run(tmp_path)
    _saved_as_on_a_gpu(run / "checkpoint_best.pt")
    if not torch.cuda.is_available():  # the file really is a GPU's: read as saved, it needs CUDA
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(run / "checkpoint_best.pt", weights_only=True)
    loaded, _ = load_trained_model(run)
    for name, weight in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], weight), name


def test_a_run_s_model_is_placed_on_the_device_it_is_asked_for(tmp_path):
    # the meta device, like a GPU, holds parameters apart from the host's: every one must move there
    run, _, _ = _untrained_run(tmp_path)
    loaded, _ = load_trained_model(run, "meta")
    assert {p.device.type for p in loaded.parameters()} == {"meta"} and not loaded.training


def test_predicting_a_split_puts_the_model_and_the_split_on_the_device_it_is_given(tmp_path, monkeypatch):
    import clinfuse.pipeline.inference as inference

    run, cohort, model = _untrained_run(tmp_path)
    asked = []
    real_load, real_split = inference.load_trained_model, inference.split_tensors

    def load(run_dir, device="cpu"):
        asked.append(("model", device))
        return real_load(run_dir, "cpu")

    def split(cohort, split, device="cpu"):
        asked.append(("split", device))
        return real_split(cohort, split, "cpu")

    monkeypatch.setattr(inference, "load_trained_model", load)
    monkeypatch.setattr(inference, "split_tensors", split)
    _, probs = predict_split(run, cohort, "test", device="cuda:1")
    assert asked == [("model", "cuda:1"), ("split", "cuda:1")]
    np.testing.assert_allclose(probs, _probabilities_of(model, cohort, "test"), rtol=0, atol=1e-6)


def test_a_run_folder_rebuilds_its_method_with_the_task_type_and_options_it_was_trained_with(tmp_path):
    # MLA with fixed weights predicts the weighted mean of its unimodal softmax probabilities: a model rebuilt
    # for another task type (sigmoid) or with its default rule (entropy gating) would predict other values.
    weights = {"tabular": 0.9, "mri": 0.1}
    run, cohort, model = _untrained_run(tmp_path, "mla", {"fusion": "fixed", "fusion_weights": weights}, kind="adni")
    rows, probs = predict_split(run, cohort, "test")
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)  # one softmax over the three classes
    np.testing.assert_allclose(probs, _probabilities_of(model, cohort, "test"), rtol=0, atol=1e-6)
    batch = next(split_tensors(cohort, "test", "cpu").batches(len(rows)))
    with torch.no_grad():
        unimodal = model(batch["inputs"], batch["present"]).unimodal
    present = {m: batch["present"][m].float()[:, None] * w for m, w in weights.items()}
    by_hand = sum(present[m] * torch.softmax(unimodal[m], -1) for m in weights) / sum(present.values())
    np.testing.assert_allclose(probs, by_hand.numpy(), rtol=0, atol=1e-5)

"""The registered champion as an MLflow user meets it: servable offline, described, traceable to its data.

Uses the session's tiny finished pipeline (tests/evaluation/conftest.py: train -> evaluate -> report ->
register into a temporary SQLite store).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clinfuse.pipeline.cli import main
from tests.fixtures.tracking import tracking_store

LABELS = ["Sepsis", "Shock", "CHF"]
INPUTS = ["ehr", "cxr", "has_ehr", "has_cxr"]


@pytest.fixture(scope="module")
def champion_built(pipeline_built):
    """(root, cohort, registry record, a client of its store, the champion's version)."""
    import mlflow

    root, _, cohort = pipeline_built
    record = json.loads((root / "registry.json").read_text())[0]
    client = mlflow.MlflowClient(tracking_uri=record["tracking_uri"], registry_uri=record["tracking_uri"])
    version = client.get_model_version_by_alias(record["name"], "champion")
    return root, cohort, record, client, version


@pytest.fixture
def champion(champion_built):
    """The champion, with its store current for the test (`models:/` URIs resolve there)."""
    with tracking_store(champion_built[2]["tracking_uri"]):
        yield champion_built


def clinfuse_probabilities(root: Path, cohort: Path, record: dict, split: str) -> tuple[dict, np.ndarray]:
    """A split's inputs by name and the eager model's probabilities for them (what `clinfuse evaluate` computes)."""
    from clinfuse.pipeline.data import load_cohort, split_tensors
    from clinfuse.pipeline.inference import predict_split

    c = load_cohort(cohort)
    batch = split_tensors(c, split).batch(np.arange(len(c.rows(split))))
    inputs = {m: batch["inputs"][m].numpy() for m in c.modalities}
    inputs.update({f"has_{m}": batch["present"][m].numpy().astype(np.float32) for m in c.modalities})
    _, probs = predict_split(root / "runs" / f"{record['method']}-s1", c, split)
    return inputs, probs


def eager_probabilities(root: Path, record: dict, named: dict) -> np.ndarray:
    """The trained (not exported) model's probabilities for named input arrays."""
    import torch

    from clinfuse.pipeline.inference import load_trained_model, probabilities, select_logits

    model, config = load_trained_model(root / "runs" / f"{record['method']}-s1")
    inputs = {m: torch.from_numpy(np.asarray(named[m], np.float32)) for m in config["modalities"]}
    present = {m: torch.from_numpy(np.asarray(named[f"has_{m}"])) > 0.5 for m in config["modalities"]}
    with torch.no_grad():
        return probabilities(select_logits(model(inputs, present), config["prediction_head"]),
                             config["task_type"]).numpy()


def test_mlflow_models_predict_serves_the_champion_offline_on_its_saved_example(champion, tmp_path):
    import mlflow

    root, cohort, record, _, _ = champion
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{record['name']}@champion",
                                                     dst_path=str(tmp_path / "model")))
    example = local / "serving_input_example.json"
    assert list(json.loads(example.read_text())["inputs"]) == INPUTS
    env = {**os.environ, "MLFLOW_TRACKING_URI": record["tracking_uri"], "PYTHONPATH": str(Path.cwd()),
           # offline: any attempt to reach the network through a proxy-aware client fails
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "PIP_NO_INDEX": "1"}
    out = tmp_path / "predictions.json"
    done = subprocess.run(
        [sys.executable, "-m", "mlflow", "models", "predict", "-m", f"models:/{record['name']}@champion",
         "-i", str(example), "-t", "json", "-o", str(out), "--env-manager", "local"],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    served = pd.DataFrame(json.loads(out.read_text())["predictions"])
    assert list(served.columns) == LABELS and len(served) == 4  # registry.example_rows
    named = {k: np.asarray(v, np.float32) for k, v in json.loads(example.read_text())["inputs"].items()}
    np.testing.assert_allclose(served.to_numpy(), eager_probabilities(root, record, named), atol=1e-5)


def test_pyfunc_takes_named_inputs_as_a_dict_or_a_dataframe_and_returns_one_column_per_label(champion):
    import mlflow

    root, cohort, record, _, _ = champion
    model = mlflow.pyfunc.load_model(f"models:/{record['name']}@champion")
    assert model.metadata.get_input_schema().input_names() == INPUTS
    example = model.input_example
    assert set(example) == set(INPUTS) and example["ehr"].shape[1:] == (48, 24)
    # the cohort is not marked synthetic: the stored example holds no patient values
    assert not example["ehr"].any() and not example["cxr"].any()
    np.testing.assert_allclose(model.predict(example).to_numpy(), eager_probabilities(root, record, example),
                               atol=1e-5)
    inputs, expected = clinfuse_probabilities(root, cohort, record, "val")
    from_dict = model.predict(inputs)
    assert list(from_dict.columns) == LABELS
    np.testing.assert_allclose(from_dict.to_numpy(), expected, atol=1e-5)
    rows = len(expected)
    cells = pd.DataFrame({k: [inputs[k][i] for i in range(rows)] for k in INPUTS})
    np.testing.assert_allclose(model.predict(cells).to_numpy(), expected, atol=1e-5)
    flat = pd.DataFrame({k: [np.ravel(inputs[k][i]).tolist() if inputs[k].ndim > 1 else float(inputs[k][i])
                             for i in range(rows)] for k in INPUTS})
    np.testing.assert_allclose(model.predict(flat).to_numpy(), expected, atol=1e-5)
    one = {k: v[:1] for k, v in inputs.items()}  # the exported batch axis is dynamic: one sample works
    np.testing.assert_allclose(model.predict(one).to_numpy(), expected[:1], atol=1e-5)


def test_served_model_names_a_missing_input_and_a_wrong_shape():
    import torch

    from clinfuse.pipeline.serving import ServedModel

    served = ServedModel(lambda x, has_x: torch.sigmoid(x.sum(-1, keepdim=True)) * has_x[:, None],
                         ["x", "has_x"], {"x": (2,), "has_x": ()}, ["risk"])
    out = served.predict({"x": np.array([[0.0, 0.0], [1.0, 1.0]]), "has_x": np.array([1.0, 1.0])})
    np.testing.assert_allclose(out["risk"].to_numpy(), [0.5, 1 / (1 + np.exp(-2.0))], rtol=1e-6)
    with pytest.raises(ValueError, match=r"missing input\(s\) \['has_x'\]"):
        served.predict({"x": np.zeros((1, 2))})
    with pytest.raises(ValueError, match=r"input 'x' has per-sample shape \[3\]; the model expects \[2\]"):
        served.predict({"x": np.zeros((1, 3)), "has_x": np.ones(1)})


def test_served_model_feeds_inputs_in_the_program_s_order_whatever_the_caller_s_key_or_column_order():
    # The program is order-sensitive (a - 2 b + 3 c): only the program's own argument order gives
    # 1 - 2*10 + 3*100 = 281 for the first sample, whichever order the caller's dict or DataFrame uses.
    from clinfuse.pipeline.serving import ServedModel

    served = ServedModel(lambda a, b, c: (a - 2 * b + 3 * c)[:, None], ["a", "b", "c"],
                         {"a": (), "b": (), "c": ()}, ["score"])
    values = {"a": np.array([1.0, 2.0]), "b": np.array([10.0, 20.0]), "c": np.array([100.0, 200.0])}
    expected = [[281.0], [562.0]]
    for order in (["a", "b", "c"], ["c", "b", "a"], ["b", "c", "a"]):
        as_dict = {k: values[k] for k in order}
        np.testing.assert_array_equal(served.predict(as_dict).to_numpy(), expected)
        as_frame = pd.DataFrame({k: values[k] for k in order})
        np.testing.assert_array_equal(served.predict(as_frame).to_numpy(), expected)


def test_the_version_keeps_the_torch_native_program_beside_the_pyfunc(champion):
    import mlflow
    import torch

    root, cohort, record, _, _ = champion
    uri = f"models:/{record['name']}@champion"
    info = mlflow.models.get_model_info(uri)
    assert {"pytorch", "python_function"} <= set(info.flavors)
    assert info.flavors["python_function"]["loader_module"] == "clinfuse.pipeline.serving"
    program = mlflow.pytorch.load_model(uri)
    inputs, expected = clinfuse_probabilities(root, cohort, record, "test")
    with torch.no_grad():
        probs = program(*[torch.from_numpy(inputs[k]) for k in INPUTS]).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_version_description_is_the_model_card_in_markdown_and_key_facts_are_tags(champion):
    _, _, record, client, version = champion
    text = version.description
    for heading in ("### Task", "### Inputs", "### Labels", "### Data", "### Metrics", "### Intended use"):
        assert heading in text
    assert "| `ehr` | [-1, 48, 24] | float32 |" in text and "`Sepsis`, `Shock`, `CHF`" in text
    assert "| macro AUPRC |" in text and "95% CI" in text and "synthetic: **" in text
    tags = version.tags
    assert tags["cohort"] == "mimic-phenotype" and tags["method"] == record["method"] and tags["seed"] == "1"
    assert tags["synthetic"] in ("true", "false", "unknown")
    assert tags["headline_metric"] == "test_macro_auprc"
    assert float(tags["headline_value"]) == pytest.approx(record["test"]["macro_auprc"], abs=1e-6)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert tags["git_commit"] == commit


def test_training_runs_log_their_data_commit_description_and_curves(champion):
    root, cohort, record, client, version = champion
    run = client.get_run(version.run_id)
    inputs = {{t.key: t.value for t in d.tags}["mlflow.data.context"]: d.dataset for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "validation", "test"}
    assert {d.name for d in inputs.values()} == {"mimic-phenotype"}
    assert len({d.digest for d in inputs.values()}) == 3
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert run.data.tags["mlflow.source.git.commit"] == commit
    assert run.data.tags["mlflow.note.content"].startswith(f"{record['method']} on mimic-phenotype, seed 1")
    experiment = client.get_experiment(run.info.experiment_id)
    assert "mimic-phenotype" in experiment.tags["mlflow.note.content"]
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert "training_curves.png" in files
    report = {f.path for f in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/report.html", "report/metrics.json", "report/metrics_detail.json"} <= report
    figures = [f.path for f in client.list_artifacts(run.info.run_id, "report/figures")]
    assert len(figures) == record["report_figures_logged"]
    assert {p.rsplit(".", 1)[-1] for p in figures} == {"png", "svg"}  # matplotlib PNGs and the inline SVG curves
    # the artifacts live with the temporary store, not in the repository
    assert experiment.artifact_location.startswith((root / "mlartifacts").as_uri())


def test_predict_leaves_the_tracking_store_unchanged(champion, tmp_path):
    import hashlib

    import mlflow

    root, cohort, record, client, _ = champion
    db = Path(record["tracking_uri"].removeprefix("sqlite:///"))

    def snapshot():
        experiments = sorted(e.name for e in client.search_experiments())
        runs = len(mlflow.search_runs(search_all_experiments=True, output_format="list"))
        return experiments, runs, hashlib.sha256(db.read_bytes()).hexdigest()

    before = snapshot()
    assert main(["predict", "--model", f"models:/{record['name']}@champion", "--cohort", str(cohort),
                 "--out", str(tmp_path / "pred.parquet"), "--split", "val"]) == 0
    assert snapshot() == before


def test_a_model_registered_without_a_training_run_keeps_its_artifacts_with_the_store(champion, tmp_path,
                                                                                       monkeypatch):
    import torch

    from clinfuse.pipeline.registry import REGISTRY_EXPERIMENT, register_model

    root, _, _, client, _ = champion
    monkeypatch.chdir(tmp_path)  # MLflow's Default experiment would write to ./mlruns here

    class Half(torch.nn.Module):
        def forward(self, x, has_x):
            return torch.sigmoid(x.sum(-1, keepdim=True)) * has_x[:, None]

    example = (np.array([[0.5, 0.5], [1.0, -3.0]], np.float32), np.array([1.0, 1.0], np.float32))
    reg = register_model(Half(), example, ["x", "has_x"], {"training": {"method": "half"}}, "toy-lone", 0.5)
    run = client.get_run(client.get_model_version("toy-lone", str(reg.version)).run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == REGISTRY_EXPERIMENT
    assert experiment.artifact_location.startswith((root / "mlartifacts").as_uri())
    assert not (tmp_path / "mlruns").exists()
    import mlflow

    served = mlflow.pyfunc.load_model(reg.model_uri).predict({"x": example[0], "has_x": example[1]})
    np.testing.assert_allclose(served["output_0"].to_numpy(), 1 / (1 + np.exp([-1.0, 2.0])), rtol=1e-6)


def test_mlflow_models_predict_adds_modality_contributions_when_the_explain_param_is_set(champion, tmp_path):
    import mlflow

    root, cohort, record, _, _ = champion
    uri = f"models:/{record['name']}@champion"
    params = mlflow.models.get_model_info(uri).signature.params
    assert [(p.name, p.default) for p in params.params] == [("explain", False)]
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path / "model")))
    inputs, expected = clinfuse_probabilities(root, cohort, record, "test")
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"inputs": {k: v.tolist() for k, v in inputs.items()}, "params": {"explain": True}}))
    env = {**os.environ, "MLFLOW_TRACKING_URI": record["tracking_uri"], "PYTHONPATH": str(Path.cwd()),
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "PIP_NO_INDEX": "1"}
    out = tmp_path / "explained.json"
    done = subprocess.run(
        [sys.executable, "-m", "mlflow", "models", "predict", "-m", str(local), "-i", str(request), "-t", "json",
         "-o", str(out), "--env-manager", "local"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    served = pd.DataFrame(json.loads(out.read_text())["predictions"])
    contrib = [f"contribution__{m}__{label}" for m in ("ehr", "cxr") for label in LABELS]
    assert list(served.columns) == LABELS + contrib
    np.testing.assert_allclose(served[LABELS].to_numpy(), expected, atol=1e-5)
    # exact Shapley values: they add up to the probability minus the probability with both modalities absent
    none = {k: np.zeros_like(v) for k, v in inputs.items()}
    p_none = eager_probabilities(root, record, none)
    total = sum(served[[f"contribution__{m}__{label}" for label in LABELS]].to_numpy() for m in ("ehr", "cxr"))
    np.testing.assert_allclose(total, expected - p_none, atol=1e-5)
    # a stay without its film gets no contribution from the film
    no_film = inputs["has_cxr"] < 0.5
    assert np.all(served.loc[no_film, [f"contribution__cxr__{label}" for label in LABELS]].to_numpy() == 0)


def test_clinfuse_predict_explain_writes_contributions_next_to_the_probabilities(champion, tmp_path):
    root, cohort, record, _, _ = champion
    out = tmp_path / "pred.parquet"
    assert main(["predict", "--model", f"models:/{record['name']}@champion", "--cohort", str(cohort),
                 "--out", str(out), "--split", "test", "--explain"]) == 0
    frame = pd.read_parquet(out)
    _, expected = clinfuse_probabilities(root, cohort, record, "test")
    probs = frame[[f"prob__{label}" for label in LABELS]].to_numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    contrib = [f"contribution__{m}__{label}" for m in ("ehr", "cxr") for label in LABELS]
    assert list(frame.columns[-len(contrib):]) == contrib and frame[contrib].notna().all().all()
    plain = tmp_path / "plain.parquet"
    assert main(["predict", "--model", f"models:/{record['name']}@champion", "--cohort", str(cohort),
                 "--out", str(plain), "--split", "test"]) == 0
    assert not any(c.startswith("contribution__") for c in pd.read_parquet(plain).columns)


# The serving rules without a registry: model card, input checks, predict params (hand-made inputs).

def test_a_model_card_refuses_absence_only_for_flags_marked_accepts_absent_false():
    from clinfuse.pipeline.serving import absent_refused

    card = {"network_data_format": {"inputs": {
        "cxr": {"accepts_absent": False},  # not a presence flag
        "has_ehr": {"accepts_absent": True}, "has_cxr": {"accepts_absent": False},
        "has_mri": {}, "has_note": "accepts_absent false"}}}
    assert absent_refused(card) == ("cxr",)
    assert absent_refused({}) == () and absent_refused({"network_data_format": {}}) == ()


def test_input_checks_name_the_input_and_the_row_counted_from_first_row():
    from clinfuse.pipeline.serving import check_inputs

    x = np.array([[0.0, 0.0], [np.nan, 0.0]])
    with pytest.raises(ValueError, match=r"^input 'x': row 11 has NaN or infinite values; the model takes finite "
                                         r"numbers only$"):
        check_inputs({"x": x, "has_x": np.ones(2)}, first_row=10)
    with pytest.raises(ValueError, match=r"^input 'x': stay 1 has NaN"):
        check_inputs({"x": x}, describe_row=lambda i: f"stay {i}")
    with pytest.raises(ValueError, match=r"^input 'has_x': row 1 is 0.5; a presence flag is 0 or 1$"):
        check_inputs({"x": np.zeros((2, 2)), "has_x": np.array([1.0, 0.5])})
    with pytest.raises(ValueError, match=r"^row 1: no modality present \(has_a = has_b = 0\); the model needs at "
                                         r"least one input$"):
        check_inputs({"has_a": np.array([1.0, 0.0]), "has_b": np.array([1.0, 0.0])})
    with pytest.raises(ValueError, match=r"^input 'has_cxr': row 6 is 0, but this model never saw a sample without "
                                         r"cxr in training \(model card: accepts_absent false\); it predicts only "
                                         r"with cxr present$"):
        check_inputs({"has_ehr": np.ones(3), "has_cxr": np.array([1.0, 0.0, 0.0])}, ("cxr",), first_row=5)


def test_input_checks_pass_finite_inputs_integer_arrays_and_refusals_without_a_flag():
    from clinfuse.pipeline.serving import check_inputs

    check_inputs({"x": np.zeros((2, 3)), "has_x": np.array([1, 1]), "has_y": np.array([0, 1])}, ("mri",))
    check_inputs({"codes": np.array([[1, 2], [3, 4]]), "has_x": np.array([1.0, 1.0])}, ("x",))


def test_the_explain_param_reads_booleans_and_true_false_strings_only():
    from clinfuse.pipeline.serving import explain_requested

    assert explain_requested(None) is False and explain_requested({}) is False
    assert explain_requested({"explain": "TRUE"}) is True and explain_requested({"explain": "False"}) is False
    assert explain_requested({"explain": True}) is True and explain_requested({"explain": np.bool_(False)}) is False
    for bad in ("yes", 1):
        with pytest.raises(ValueError, match=f"predict param 'explain' must be true or false, got {bad!r}"):
            explain_requested({"explain": bad})


def test_an_invalid_input_is_a_value_error_that_mlflow_answers_with_400():
    from mlflow.exceptions import MlflowException

    from clinfuse.pipeline.serving import invalid_input

    err = invalid_input("bad row")
    assert isinstance(err, ValueError) and isinstance(err, MlflowException)
    assert err.error_code == "INVALID_PARAMETER_VALUE" and err.get_http_status_code() == 400


def _served(program=None, refused=()):
    import torch

    from clinfuse.pipeline.serving import ServedModel

    program = program or (lambda x, has_x: torch.sigmoid(x.sum(-1).sum(-1, keepdim=True)) * has_x[:, None])
    return ServedModel(program, ["x", "has_x"], {"x": (2, 2), "has_x": ()}, ["risk"], refused)


def test_served_inputs_become_float32_and_a_dataframe_cell_is_reshaped_to_one_sample():
    served = _served()
    x, has_x = served.arrays({"x": np.ones((1, 2, 2)), "has_x": np.array([1])})
    assert x.dtype == np.float32 and has_x.dtype == np.float32
    (x,) = served.arrays(pd.DataFrame({"x": [[0.0, 1.0, 2.0, 3.0]], "has_x": [1.0]}))[:1]
    np.testing.assert_array_equal(x, np.array([[[0.0, 1.0], [2.0, 3.0]]], np.float32))


def test_served_inputs_of_another_type_or_disagreeing_sizes_are_refused_by_name():
    served = _served()
    with pytest.raises(TypeError, match=r"expected a dict of arrays or a DataFrame with columns \['x', 'has_x'\], "
                                        r"got list"):
        served.arrays([np.ones((1, 2, 2)), np.ones(1)])
    with pytest.raises(ValueError, match=r"inputs disagree on the number of samples: \{'x': 2, 'has_x': 1\}"):
        served.arrays({"x": np.ones((2, 2, 2)), "has_x": np.ones(1)})


def test_predict_answers_bad_inputs_and_non_finite_probabilities_with_400_errors():
    import torch
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="got list"):
        _served().predict([np.ones((1, 2, 2))])
    from clinfuse.pipeline.serving import ServedModel

    two = ServedModel(lambda x, y, has_x, has_y: torch.sigmoid(x + y)[:, None], ["x", "y", "has_x", "has_y"],
                      {"x": (), "y": (), "has_x": (), "has_y": ()}, ["risk"], ("x",))
    with pytest.raises(MlflowException, match=r"input 'has_x': row 0 is 0, but this model never saw"):
        two.predict({"x": np.ones(2), "y": np.ones(2), "has_x": np.array([0.0, 1.0]), "has_y": np.ones(2)})
    blows_up = _served(lambda x, has_x: torch.log(x.sum((1, 2)) - 1.0)[:, None])  # row 1: log(0) = -inf
    with pytest.raises(MlflowException, match=r"^row 1: the model's probabilities are not finite \(inputs far outside "
                                              r"the training range\?\); nothing returned$"):
        blows_up.predict({"x": np.stack([np.ones((2, 2)), np.full((2, 2), 0.25)]), "has_x": np.ones(2)})


def test_a_dataframe_cell_left_empty_is_refused_as_a_missing_value_naming_the_input_and_row():
    served = _served()
    cells = pd.DataFrame({"x": [[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]], "has_x": [1.0, None]})
    with pytest.raises(ValueError, match=r"^input 'has_x': row 1 has NaN or infinite values"):
        served.predict(cells)


def test_the_explain_param_adds_each_modality_s_contribution_per_label_after_the_probabilities():
    import torch

    from clinfuse.pipeline.serving import ServedModel

    # Additive in the modalities: a modality's Shapley contribution is its own term, zero when absent.
    # risk = a + b, gap = a - b (a = 0.25 a_in has_a, b = 0.5 b_in has_b): sample 0 has both, sample 1 only a.
    def program(a, b, has_a, has_b):
        ta, tb = 0.25 * a * has_a, 0.5 * b * has_b
        return torch.stack([ta + tb, ta - tb], dim=1)

    served = ServedModel(program, ["a", "b", "has_a", "has_b"], {"a": (), "b": (), "has_a": (), "has_b": ()},
                         ["risk", "gap"])
    inputs = {"a": np.array([1.0, 2.0]), "b": np.array([1.0, 0.0]), "has_a": np.ones(2), "has_b": np.array([1.0, 0.0])}
    out = served.predict(inputs, params={"explain": True})
    assert list(out.columns) == ["risk", "gap", "contribution__a__risk", "contribution__a__gap",
                                 "contribution__b__risk", "contribution__b__gap"]
    np.testing.assert_allclose(out.to_numpy(), [[0.75, -0.25, 0.25, 0.25, 0.5, -0.5],
                                                [0.5, 0.5, 0.5, 0.5, 0.0, 0.0]], atol=1e-7)
    assert list(served.predict(inputs, params={"explain": "false"}).columns) == ["risk", "gap"]
    with pytest.raises(ValueError, match="predict param 'explain' must be true or false, got 'yes'"):
        served.predict(inputs, params={"explain": "yes"})


def test_the_staged_package_is_clinfuse_in_its_installed_layout(tmp_path):
    import clinfuse
    from clinfuse.pipeline import serving
    from clinfuse.pipeline.serving import SUBPACKAGES, stage_package

    root = stage_package(tmp_path / "new" / "code")  # the folder is created
    assert root == tmp_path / "new" / "code" / "clinfuse"
    assert (root / "__init__.py").read_text() == Path(clinfuse.__file__).read_text()
    assert sorted(p.name for p in root.iterdir()) == sorted(["__init__.py", *SUBPACKAGES])
    assert (root / "pipeline" / "serving.py").read_text() == Path(serving.__file__).read_text()
    assert (root / "models" / "export.py").is_file() and (root / "configs").is_dir()


def test_the_staged_package_leaves_out_caches_and_compiled_files(tmp_path):
    import types

    from clinfuse.pipeline import serving

    source = tmp_path / "src" / "stray"  # a subpackage living outside the checkout, with compiled leftovers
    (source / "__pycache__").mkdir(parents=True)
    for name in ("__init__.py", "a.py", "a.pyc", "b.pyo", "__pycache__/a.cpython-311.pyc"):
        (source / name).write_text("")
    module = types.ModuleType("clinfuse.stray")
    module.__file__ = str(source / "__init__.py")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "clinfuse.stray", module)
        mp.setattr(serving, "SUBPACKAGES", ("stray",))
        root = serving.stage_package(tmp_path / "out")
    assert sorted(p.name for p in (root / "stray").iterdir()) == ["__init__.py", "a.py"]


def _save_pair(path: Path, mlflow_model=None, card: bool = True) -> None:
    """Save a two-modality toy model, sigmoid(has_x (x_1 + x_2) + has_y y), through the flavor, with a model
    card saying it never saw a sample without y (unless `card` is False)."""
    import torch

    from clinfuse.pipeline.registry import model_signature
    from clinfuse.pipeline.serving import save_model

    class Pair(torch.nn.Module):
        def forward(self, x, y, has_x, has_y):
            return torch.sigmoid(x.sum(-1) * has_x + y * has_y)[:, None]

    example = {"x": np.array([[0.5, 0.5], [1.0, -3.0]], np.float32), "y": np.array([0.0, 0.0], np.float32),
               "has_x": np.array([1.0, 1.0], np.float32), "has_y": np.array([1.0, 1.0], np.float32)}
    card_file = path.parent / "metadata.json"
    card_file.write_text(json.dumps({"network_data_format": {"inputs": {"has_x": {"accepts_absent": True},
                                                                        "has_y": {"accepts_absent": False}}}}))
    save_model(str(path), mlflow_model, exportable=Pair(), example=example, labels=["risk"],
               signature=model_signature(list(example), tuple(example.values()), ["risk"]),
               pip_requirements=["torch", "mlflow"], extra_files=[str(card_file)] if card else None,
               metadata={"model_card": "metadata.json"})


def test_a_saved_model_serves_named_inputs_and_its_card_s_refusals_from_its_own_folder(tmp_path):
    import mlflow

    path = tmp_path / "model"
    _save_pair(path)
    assert json.loads((path / "data" / "serving.json").read_text()) == {
        "inputs": ["x", "y", "has_x", "has_y"], "shapes": {"x": [2], "y": [], "has_x": [], "has_y": []},
        "labels": ["risk"]}
    model = mlflow.pyfunc.load_model(str(path))
    # sigmoid(0.5 + 0.5 + 0) = 0.731059; x absent: sigmoid(-2) = 0.119203
    out = model.predict({"has_y": np.ones(2, np.float32), "y": np.array([0.0, -2.0], np.float32),
                         "has_x": np.array([1.0, 0.0], np.float32), "x": np.array([[0.5, 0.5], [1.0, 1.0]], np.float32)})
    assert list(out.columns) == ["risk"]
    np.testing.assert_allclose(out["risk"].to_numpy(), 1 / (1 + np.exp([-1.0, 2.0])), rtol=1e-6)
    with pytest.raises(ValueError, match=r"^input 'has_y': row 0 is 0, but this model never saw a sample without y"):
        model.predict({"x": np.zeros((1, 2), np.float32), "y": np.zeros(1, np.float32),
                       "has_x": np.ones(1, np.float32), "has_y": np.zeros(1, np.float32)})


def test_a_saved_model_folder_holds_both_flavors_its_code_card_named_example_and_requirements(tmp_path):
    import mlflow

    path = tmp_path / "model"
    logged = mlflow.models.Model()  # what `Model.log` passes: the flavors must be recorded on it
    _save_pair(path, logged)
    for meta in (logged, mlflow.models.Model.load(str(path))):
        pyfunc = meta.flavors["python_function"]
        assert pyfunc["loader_module"] == "clinfuse.pipeline.serving"
        assert (pyfunc["data"], pyfunc["code"], pyfunc["env"]) == ("data", "code", {"conda": "conda.yaml",
                                                                                  "virtualenv": "python_env.yaml"})
        assert meta.flavors["pytorch"]["model_data"] == "data"
        assert meta.metadata == {"model_card": "metadata.json"}
        assert meta.signature.inputs.input_names() == ["x", "y", "has_x", "has_y"]
    assert (path / "data" / "model.pt2").is_file() and (path / "code" / "clinfuse" / "pipeline" / "serving.py").is_file()
    assert (path / "extra_files" / "metadata.json").read_text() == (tmp_path / "metadata.json").read_text()
    assert (path / "requirements.txt").read_text().split() == ["torch", "mlflow"]
    # the stored example is the named one, as a user passes it
    assert json.loads((path / "input_example.json").read_text()) == {
        "x": [[0.5, 0.5], [1.0, -3.0]], "y": [0.0, 0.0], "has_x": [1.0, 1.0], "has_y": [1.0, 1.0]}
    assert json.loads((path / "serving_input_example.json").read_text())["inputs"]["x"] == [[0.5, 0.5], [1.0, -3.0]]


def test_a_model_saved_without_a_card_refuses_no_modality_and_its_program_stays_pickle_free(tmp_path):
    import mlflow

    work = tmp_path / "work"
    work.mkdir()
    (work / "input_example.json").write_text("mine")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)  # saving leaves the working directory alone
        mp.setenv("MLFLOW_TRACKING_URI", "databricks")  # where MLflow's own default format would be a pickle
        _save_pair(tmp_path / "model", card=False)
    assert (work / "input_example.json").read_text() == "mine"
    assert (tmp_path / "model" / "data" / "model.pt2").is_file()
    model = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    out = model.predict({"x": np.array([[0.5, 0.5]], np.float32), "y": np.array([3.0], np.float32),
                         "has_x": np.ones(1, np.float32), "has_y": np.zeros(1, np.float32)})
    np.testing.assert_allclose(out["risk"].to_numpy(), [1 / (1 + np.exp(-1.0))], rtol=1e-6)  # y absent: sigmoid(1)

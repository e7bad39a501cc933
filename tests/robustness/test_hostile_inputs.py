"""Inputs a model cannot score faithfully are refused by name and row, never answered with NaN:
`clinfuse predict`, the pyfunc model and `mlflow models serve` (its ASGI app, driven in process)."""

from __future__ import annotations

import asyncio
import json
import shutil

import numpy as np
import pytest

from clinfuse.pipeline.cli import main
from tests.fixtures.tracking import tracking_store


@pytest.fixture(scope="module")
def pyfuncs(registered_models_built):
    import mlflow

    uri, models = registered_models_built
    with tracking_store(uri):
        return {kind: mlflow.pyfunc.load_model(model_uri) for kind, (_, model_uri) in models.items()}


def _inputs(n: int = 4, **changes) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    named = {"ehr": rng.normal(size=(n, 48, 24)).astype(np.float32),
             "cxr": rng.random((n, 1, 16, 16)).astype(np.float32),
             "has_ehr": np.ones(n, np.float32), "has_cxr": np.ones(n, np.float32)}
    for name, (row, value) in changes.items():
        named[name][row] = value
    return named


def test_ordinary_inputs_give_finite_probabilities(pyfuncs):
    out = pyfuncs["paired"].predict(_inputs())
    assert list(out.columns) == ["Sepsis", "Shock", "CHF"] and np.isfinite(out.to_numpy()).all()


@pytest.mark.parametrize(("changes", "message"), [
    ({"ehr": (2, np.nan)}, "input 'ehr': row 2 has NaN or infinite values"),
    ({"ehr": (1, np.inf)}, "input 'ehr': row 1 has NaN or infinite values"),
    ({"cxr": (3, -np.inf)}, "input 'cxr': row 3 has NaN or infinite values"),
    ({"has_cxr": (0, 2.0)}, "input 'has_cxr': row 0 is 2.0; a presence flag is 0 or 1"),
    ({"has_ehr": (1, 7.0)}, "input 'has_ehr': row 1 is 7.0; a presence flag is 0 or 1"),
    ({"has_cxr": (2, 0.5)}, "input 'has_cxr': row 2 is 0.5"),
    ({"has_cxr": (1, np.nan)}, "input 'has_cxr': row 1 has NaN"),
])
def test_the_pyfunc_model_refuses_what_it_cannot_score(pyfuncs, changes, message):
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match=message.replace("(", r"\(").replace(")", r"\)")):
        pyfuncs["partial"].predict(_inputs(**changes))


def test_no_modality_present_is_refused(pyfuncs):
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match=r"row 3: no modality present \(has_ehr = has_cxr = 0\)"):
        pyfuncs["partial"].predict(_inputs(has_ehr=(3, 0.0), has_cxr=(3, 0.0)))


def test_a_model_that_never_saw_a_stay_without_a_film_refuses_one(pyfuncs, registered_models):
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match=r"input 'has_cxr': row 1 is 0, but this model never saw a sample "
                                              r"without cxr in training"):
        pyfuncs["paired"].predict(_inputs(has_cxr=(1, 0.0)))
    # a model trained with stays without a film predicts for one, as its card says
    out = pyfuncs["partial"].predict(_inputs(has_cxr=(1, 0.0)))
    assert np.isfinite(out.to_numpy()).all()


def test_the_model_card_says_what_a_presence_flag_of_zero_does(registered_models):
    import mlflow

    uri, models = registered_models
    for kind, accepts in (("paired", False), ("partial", True)):
        local = mlflow.artifacts.download_artifacts(artifact_uri=models[kind][1])
        card = json.loads((__import__("pathlib").Path(local) / "extra_files" / "metadata.json").read_text())
        flag = card["network_data_format"]["inputs"]["has_cxr"]
        assert flag["accepts_absent"] is accepts and (flag["absent_in_training"] > 0) is accepts
        assert ("0 is refused" in flag["meaning"]) is not accepts
        assert card["network_data_format"]["inputs"]["has_ehr"]["accepts_absent"] is False
        description = mlflow.MlflowClient().get_model_version_by_alias(f"{kind}-model", "champion").description
        assert flag["meaning"].split(":")[0] in description


def _post(app, body: bytes) -> tuple[int, bytes]:
    """POST /invocations to an ASGI app in process (what `mlflow models serve` runs under uvicorn)."""
    sent, messages = [], [{"type": "http.request", "body": body, "more_body": False}]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/invocations", "raw_path": b"/invocations", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_serving_answers_nan_inputs_with_a_json_400_naming_the_input(pyfuncs):
    from mlflow.pyfunc import scoring_server

    app = scoring_server.init(pyfuncs["partial"])
    named = _inputs(2)
    payload = {"inputs": {k: v.tolist() for k, v in named.items()}}
    status, body = _post(app, json.dumps(payload).encode())
    assert status == 200 and np.isfinite(np.asarray(
        [list(r.values()) for r in json.loads(body)["predictions"]], float)).all()
    payload["inputs"]["ehr"][1][0][0] = float("nan")
    status, body = _post(app, json.dumps(payload).encode())  # Python writes the NaN token, as many clients do
    assert status == 400
    assert "input 'ehr': row 1 has NaN or infinite values" in json.loads(body)["message"]
    payload["inputs"]["ehr"][1][0][0] = 0.0
    payload["inputs"]["has_cxr"] = [7.0, 1.0]
    status, body = _post(app, json.dumps(payload).encode())
    assert status == 400 and "input 'has_cxr': row 0 is 7.0" in json.loads(body)["message"]


def test_predict_refuses_a_cohort_with_nan_inputs_naming_the_sample(registered_models, tmp_path, capsys):
    _, models = registered_models
    cohort, model_uri = models["paired"]
    bad = tmp_path / "mimic-phenotype"
    shutil.copytree(cohort, bad)
    ehr = np.load(bad / "ehr.npy")
    ehr[5, 3, 2] = np.nan
    np.save(bad / "ehr.npy", ehr)
    out = tmp_path / "predictions.parquet"
    code = main(["predict", "--model", model_uri, "--cohort", str(bad), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err[-2000:]
    # the cohort's own check (pipeline.cohort_checks) or predict's input check: either names the row
    assert "row 5" in err and "NaN" in err and "ehr" in err and not out.exists()


def test_predict_refuses_stays_without_a_film_for_a_model_that_never_saw_one(registered_models, tmp_path, capsys):
    import pandas as pd

    _, models = registered_models
    cohort, model_uri = models["paired"]
    partial = tmp_path / "mimic-phenotype"
    shutil.copytree(models["partial"][0], partial)
    code = main(["predict", "--model", model_uri, "--cohort", str(partial), "--out", str(tmp_path / "p.parquet")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "input 'has_cxr'" in err and "never saw a sample without cxr" in err
    assert not (tmp_path / "p.parquet").exists()
    assert main(["predict", "--model", models["partial"][1], "--cohort", str(partial),
                 "--out", str(tmp_path / "p.parquet")]) == 0
    assert pd.read_parquet(tmp_path / "p.parquet").filter(like="prob__").notna().all().all()
    del cohort


def test_predict_out_naming_a_folder_is_a_one_line_error(registered_models, tmp_path, capsys):
    _, models = registered_models
    cohort, model_uri = models["partial"]
    (tmp_path / "out").mkdir()
    code = main(["predict", "--model", model_uri, "--cohort", str(cohort), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "is a folder" in err
    assert list((tmp_path / "out").iterdir()) == []


def test_the_docs_offer_only_the_dict_of_arrays_the_signature_describes():
    """MLflow's schema enforcement of the named-tensor signature refused the DataFrame of array cells
    that the docs used to offer; they now offer the dict of arrays only."""
    from clinfuse.pipeline import serving

    readme = (__import__("pathlib").Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "each cell one sample's array" not in readme
    assert "whose cells are one sample's array" not in serving.__doc__
    assert "a DataFrame\nwhose cells are arrays is not a supported input" in readme
    assert "a DataFrame whose cells are arrays is not a supported\n  input" in serving.__doc__

"""Files a user did not make with clinfuse never run code when read."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from clinfuse.etl.errors import InputError
from clinfuse.pipeline.checkpoints import load_checkpoint
from clinfuse.pipeline.cli import main
from clinfuse.pipeline.inference import load_trained_model
from clinfuse.pipeline.registry import download_registered_model

CANARY_NAME = "pwned.txt"


class _Exploit:
    """Unpickling this calls os.system: the classic crafted-checkpoint attack."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _crafted(path: Path, canary: Path) -> Path:
    with open(path, "wb") as fh:
        pickle.dump({"model": _Exploit(canary)}, fh)
    return path


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path):
    canary = tmp_path / CANARY_NAME
    with pytest.raises(InputError, match="not a clinfuse checkpoint that loads safely"):
        load_checkpoint(_crafted(tmp_path / "checkpoint_best.pt", canary))
    assert not canary.exists()


def test_evaluating_a_run_whose_checkpoint_was_replaced_runs_nothing(tmp_path):
    canary = tmp_path / CANARY_NAME
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(
        "modalities: [ehr]\ninput_shapes: {ehr: [48, 24]}\nlabel_names: [a]\ntask_type: binary\n"
        "encoders: {ehr: {name: ehr_lstm, hidden: 4}}\nmethod: {method: late_fusion, options: {}}\n"
    )
    _crafted(run / "checkpoint_best.pt", canary)
    with pytest.raises(InputError, match="checkpoint_best.pt: not a clinfuse checkpoint"):
        load_trained_model(run)
    assert not canary.exists()


def test_a_real_checkpoint_of_tensors_and_plain_values_loads(tmp_path):
    path = tmp_path / "ok.pt"
    torch.save({"model": {"w": torch.ones(2)}, "state": {"history": [{"epoch": 1, "val": 0.5}], "best": None}}, path)
    assert load_checkpoint(path)["state"]["history"][0]["val"] == 0.5


@pytest.mark.parametrize("uri", ["/tmp/some/model", "file:///tmp/model", "runs:/abc/model"])
def test_predict_accepts_only_registry_uris(uri):
    with pytest.raises(InputError, match="not a registry URI"):
        download_registered_model(uri)


def test_predict_with_a_local_path_is_a_one_line_error(tmp_path, capsys):
    code = main(["predict", "--model", str(tmp_path), "--cohort", str(tmp_path), "--out", str(tmp_path / "p.parquet")])
    assert code == 2
    assert "not a registry URI" in capsys.readouterr().err

"""`make demo`'s closing summary says plainly that a one-seed sweep is a smoke test, not a comparison."""

from __future__ import annotations

from clinfuse.pipeline.cli import main


def _summary(tmp_path, monkeypatch, capsys, seeds: str) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = tmp_path / "params.yaml"
    params.write_text(f"sweep:\n  seeds: {seeds}\n")
    assert main(["--params", str(params), "summary"]) == 0
    return capsys.readouterr().out


def test_one_seed_is_called_a_smoke_test(tmp_path, monkeypatch, capsys):
    assert "a smoke test of the pipeline, not a comparison" in _summary(tmp_path, monkeypatch, capsys, "[42]")


def test_four_seeds_are_not(tmp_path, monkeypatch, capsys):
    assert "smoke test" not in _summary(tmp_path, monkeypatch, capsys, "[42, 123, 1234, 2024]")

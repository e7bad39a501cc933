import pytest

from clinfuse.etl.errors import ConfigError
from clinfuse.pipeline.config import load_params


def test_missing_params_file_gives_all_defaults(tmp_path):
    params = load_params(tmp_path / "params.yaml", apply_env=False)
    assert params.paths.mimic_iv == "data/raw/mimic-iv"
    assert params.train.epochs == 12


def test_unknown_key_is_named_with_its_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("paths:\n  mimic_4: /data/mimic\n")
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert str(path) in str(err.value)
    assert "paths.mimic_4: unknown key" in str(err.value)


def test_mistyped_value_is_named_with_key_and_value(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("synth:\n  seed: forty-two\n")
    with pytest.raises(ConfigError, match=r"synth.seed: .*integer.*'forty-two'"):
        load_params(path)


def test_invalid_yaml_is_a_config_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("paths: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(path)


def test_environment_overrides_raw_data_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("CLINFUSE_MIMIC_IV", "/secure/mimic-iv/3.1")
    params = load_params(tmp_path / "params.yaml")
    assert params.paths.mimic_iv == "/secure/mimic-iv/3.1"


def test_repository_params_file_is_valid():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    load_params(root / "params.yaml", apply_env=False)

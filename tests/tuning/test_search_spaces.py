"""Search spaces: one per method config, validated at load time with errors that name the key."""

from __future__ import annotations

import pytest

from clinfuse.etl.errors import ConfigError
from clinfuse.pipeline.config import load_section
from clinfuse.pipeline.settings.methods import CONFIG_DIR, MethodConfig
from clinfuse.pipeline.settings.search import SearchSpace, SelectedConfig, search_path, split_params

METHOD_CONFIGS = sorted(p.stem for p in (CONFIG_DIR / "methods").glob("*.yaml"))


@pytest.mark.parametrize("name", METHOD_CONFIGS)
def test_every_method_config_has_a_valid_search_space_with_sources_and_the_learning_rate(name):
    method = load_section(MethodConfig, CONFIG_DIR / "methods" / f"{name}.yaml")
    space = load_section(SearchSpace, search_path(name)).check(str(search_path(name)), method.method, method.options)
    assert space.sources
    assert "train.lr" in space.space
    assert space.grid_size() is not None  # every shipped space can be visited by a grid


def test_masam_space_is_the_papers_grid():
    space = load_section(SearchSpace, search_path("masam"))
    assert space.space["rho"] == [0.1, 0.3, 0.4, 0.5, 0.6, 0.7, 0.9]
    assert space.space["alpha"] == [0.1, 0.3, 0.5]
    assert space.space["beta"] == [0.5, 0.7, 0.9]
    assert space.grid_size() == 63 * len(space.space["train.lr"])


def test_every_method_gets_the_same_learning_rates():
    assert len({tuple(load_section(SearchSpace, search_path(n)).space["train.lr"]) for n in METHOD_CONFIGS}) == 1


def _check(tmp_path, text: str, method: str = "masam", fixed: dict | None = None):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return load_section(SearchSpace, path).check(str(path), method, fixed or {})


def test_an_unknown_option_is_refused_naming_the_file_and_key(tmp_path):
    with pytest.raises(ConfigError, match=r"space.yaml: space.rhoo: unknown option for method 'masam'"):
        _check(tmp_path, "method: masam\nsources: [x]\nspace:\n  rhoo: [0.1]\n")


def test_an_unknown_training_setting_is_refused_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"space.train.device: not a tunable training setting"):
        _check(tmp_path, "method: masam\nsources: [x]\nspace:\n  train.device: [cpu]\n")


def test_an_invalid_learning_rate_is_refused_naming_the_value(tmp_path):
    with pytest.raises(ConfigError, match=r"space.train.lr: -0.1 is not a valid train.lr"):
        _check(tmp_path, "method: masam\nsources: [x]\nspace:\n  train.lr: [0.001, -0.1]\n")


def test_tuning_what_the_config_fixes_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"space.aps: the method config fixes aps = False"):
        _check(tmp_path, "method: masam\nsources: [x]\nspace:\n  aps: [true, false]\n", fixed={"aps": False})


def test_a_space_for_another_method_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"method: 'sam', but the method config trains 'masam'"):
        _check(tmp_path, "method: sam\nsources: [x]\nspace:\n  rho: [0.1]\n")


@pytest.mark.parametrize("text, key", [
    ("method: masam\nspace:\n  rho: [0.1]\n", "sources"),
    ("method: masam\nsources: [x]\nspace:\n  rho: []\n", "space.rho: empty list"),
    ("method: masam\nsources: [x]\nspace:\n  rho: [0.1, 0.1]\n", "space.rho: repeated values"),
    ("method: masam\nsources: [x]\nspace:\n  rho: {low: 0.5, high: 0.1}\n", "space.rho"),
    ("method: masam\nsources: [x]\nspace:\n  rho: [0.1]\nextra: 1\n", "extra: unknown key"),
])
def test_malformed_spaces_fail_naming_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError, match=key):
        _check(tmp_path, text)


def test_a_range_makes_the_space_continuous():
    space = SearchSpace(method="masam", sources=["x"], space={"rho": {"low": 0.01, "high": 1.0, "log": True},
                                                              "alpha": [0.1, 0.5]})
    assert space.grid_size() is None


def test_trial_parameters_split_into_method_options_and_training_settings():
    assert split_params({"rho": 0.3, "train.lr": 1e-3}) == ({"rho": 0.3}, {"lr": 1e-3})


def test_a_selected_config_refuses_an_untunable_training_setting():
    with pytest.raises(ValueError, match="device"):
        SelectedConfig(method="masam", train={"device": "cuda"})

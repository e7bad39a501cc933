"""Every default is stated once, in the code; the YAML files state only what differs from it.

params.yaml holds paths, the sweep and real overrides; a method config holds only options that
differ from the method's constructor defaults; a model preset only encoder options that differ
from the encoder's (the sizes have none: the preset is their one home); the data gives the
input widths; the benchmarks build the presets that training builds.
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import pytest
import torch

from clinfuse.etl.errors import ConfigError
from clinfuse.models.build import build_encoders
from clinfuse.models.encoders import ENCODERS
from clinfuse.models.methods import METHODS
from clinfuse.pipeline.config import Params, load_section, read_yaml
from clinfuse.pipeline.settings.methods import CONFIG_DIR, MethodConfig, ModelPreset

ROOT = Path(__file__).resolve().parents[1]
NOT_OVERRIDES = {"paths", "sweep"}  # DVC interpolates them into dvc.yaml: they must be written out


def _constructor_default(factory, name: str):
    """The default of keyword `name` of an encoder factory (a class or a functools.partial of one)."""
    fixed = getattr(factory, "keywords", {})
    if name in fixed:
        return fixed[name]
    parameter = inspect.signature(getattr(factory, "func", factory)).parameters.get(name)
    return inspect.Parameter.empty if parameter is None else parameter.default


def test_every_value_in_params_yaml_differs_from_its_settings_default():
    params = read_yaml(ROOT / "params.yaml")
    restated = []
    for section, values in params.items():
        if section in NOT_OVERRIDES:
            continue
        model = Params.model_fields[section].annotation
        given, default = model.model_validate(values), model()
        restated += [f"{section}.{key}" for key in values if getattr(given, key) == getattr(default, key)]
    assert restated == [], f"params.yaml restates the code defaults of {restated}"


def test_every_stage_section_of_params_yaml_is_present_even_when_empty():
    # DVC refuses a stage whose `params:` section is missing from params.yaml
    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    listed = {p for stage in stages.values() for p in (stage.get("do", stage).get("params") or [])}
    assert listed <= set(read_yaml(ROOT / "params.yaml"))


@pytest.mark.parametrize("path", sorted((CONFIG_DIR / "methods").glob("*.yaml")), ids=lambda p: p.stem)
def test_a_method_config_holds_only_options_that_differ_from_the_constructor_defaults(path):
    config = load_section(MethodConfig, path).check(str(path))
    signature = inspect.signature(METHODS[config.method].__init__)
    restated = [k for k, v in config.options.items() if signature.parameters[k].default == v]
    assert restated == [], f"{path.name} restates the defaults of {restated}"


@pytest.mark.parametrize("path", sorted((CONFIG_DIR / "models").glob("*.yaml")), ids=lambda p: p.stem)
def test_a_model_preset_holds_only_encoder_options_that_differ_from_the_constructor_defaults(path):
    preset = load_section(ModelPreset, path)
    restated = []
    for modality, spec in preset.encoders.items():
        factory = ENCODERS[spec["name"]]
        restated += [f"{modality}.{key}" for key, value in spec.items()
                     if key != "name" and _constructor_default(factory, key) == value]
    assert restated == [], f"{path.name} restates the encoder defaults of {restated}"


@pytest.mark.parametrize("name", ["ehr_transformer", "ehr_lstm"])
def test_the_ehr_encoder_takes_its_width_from_the_data(name):
    spec = {"ehr_transformer": {"d_model": 8, "nhead": 2, "num_layers": 1, "dropout": 0.0},
            "ehr_lstm": {"hidden": 8}}[name]
    encoder = build_encoders({"ehr": {"name": name, **spec}}, ["ehr"], {"ehr": (6, 10)})["ehr"]
    x = torch.zeros(3, 6, 10)
    x[..., 5:] = 1.0  # five variables, all observed
    assert encoder(x).shape == (3, 8)
    with pytest.raises(ConfigError, match="even number"):
        build_encoders({"ehr": {"name": name, **spec}}, ["ehr"], {"ehr": (6, 9)})
    with pytest.raises(ConfigError, match=r"\['n_vars'\] come from the cohort's input shape"):
        build_encoders({"ehr": {"name": name, "n_vars": 12, **spec}}, ["ehr"], {"ehr": (6, 24)})


def test_the_step_cost_benchmark_builds_the_training_presets():
    spec = importlib.util.spec_from_file_location("step_cost", ROOT / "benchmarks" / "step_cost.py")
    step_cost = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(step_cost)
    assert step_cost.PAPER == load_section(ModelPreset, CONFIG_DIR / "models" / "paper.yaml").encoders
    assert step_cost.SMALL == load_section(ModelPreset, CONFIG_DIR / "models" / "small.yaml").encoders

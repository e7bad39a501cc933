"""The package structure holds: stages do not reach into each other, each command drives only its own stage.

Shared results I/O lives in pipeline/results.py and pure computation in evaluation/, so that a
stage can change without touching another. Imports are read statically with `ast` (every
`import` and `from ... import`, including those inside functions), and so are module names
given as strings (the `etl` command picks its stage module by name at run time).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from clinfuse.pipeline.runs import run_name

ROOT = Path(__file__).resolve().parents[1]
STAGES = ROOT / "pipeline" / "stages"
COMMANDS = ROOT / "pipeline" / "commands"

# command module -> the stage modules it drives (commands without a stage map to nothing)
COMMAND_STAGES = {
    "analyze": {"analyze"},
    "etl": {"etl_mimic", "etl_adni"},
    "evaluate": {"evaluate"},
    "predict": set(),
    "relocate_store": set(),
    "register": {"register"},
    "report": {"report"},
    "summary": set(),
    "synth": set(),
    "tables": {"summary_tables"},
    "train": set(),
    "tune": {"tune"},
}
# (command, stage) imports tolerated for now, with the name imported and why (the test fails on an
# entry that is no longer used, so it cannot outlive its reason). None since the cohort manifest
# carries the ID columns.
TOLERATED: dict[tuple[str, str], set[str]] = {}


def _modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.py") if p.name != "__init__.py")


def _stage_imports(path: Path) -> dict[str, set[str]]:
    """Stage module -> the names imported from it by `path` ("*" for the module itself)."""
    tree = ast.parse(path.read_text())
    found: dict[str, set[str]] = {}

    def add(module: str, name: str) -> None:
        parts = module.removeprefix("clinfuse.").split(".")  # installed as clinfuse.<folder>
        if parts[:2] == ["pipeline", "stages"] and len(parts) > 2:
            found.setdefault(parts[2], set()).add(name)
        elif parts == ["pipeline", "stages"] and name != "*":
            found.setdefault(name, set()).add("*")  # from pipeline.stages import report

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, "*")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-node.level])
                module = f"{package}.{module}" if module else package
            for alias in node.names:
                add(module, alias.name)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            for name in re.findall(r"\bpipeline\.stages\.(\w+)", node.value):  # importlib by name
                found.setdefault(name, set()).add("*")
    return found


def _imports_module(path: Path, module: str) -> bool:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.removeprefix("clinfuse.").split(".")[0] == module for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").removeprefix("clinfuse.").split(".")[0] == module:
            return True
    return False


@pytest.mark.parametrize("path", _modules(STAGES), ids=lambda p: p.stem)
def test_no_stage_imports_another_stage(path):
    others = {stage: names for stage, names in _stage_imports(path).items() if stage != path.stem}
    assert not others, (f"pipeline/stages/{path.name} imports {others}: move what stages share to "
                        "pipeline/results.py (files) or evaluation/ (computation)")


def _command_line_code(path: Path) -> list[str]:
    """What in `path` is command-line code: argparse, parser calls, functions taking parsed `args`."""
    found = ["imports argparse"] if _imports_module(path, "argparse") else []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                "add_argument", "add_parser", "add_subparsers", "add_mutually_exclusive_group", "parse_args"):
            found.append(f"line {node.lineno}: .{node.func.attr}()")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and any(
                a.arg in ("args", "parser") for a in node.args.args + node.args.kwonlyargs):
            found.append(f"line {node.lineno}: {node.name}() takes parsed arguments or a parser")
    return found


@pytest.mark.parametrize("path", _modules(STAGES), ids=lambda p: p.stem)
def test_no_stage_holds_command_line_code(path):
    found = _command_line_code(path)
    assert not found, f"pipeline/stages/{path.name}: {found}; command-line parsing belongs in pipeline/commands/"


def test_every_command_is_mapped_to_its_stages():
    commands = {p.stem for p in _modules(COMMANDS)}
    assert commands == set(COMMAND_STAGES), ("add new commands to COMMAND_STAGES (and drop removed ones): "
                                             f"{sorted(commands ^ set(COMMAND_STAGES))}")
    stages = {p.stem for p in _modules(STAGES)}
    assert set().union(*COMMAND_STAGES.values()) <= stages


@pytest.mark.parametrize("path", _modules(COMMANDS), ids=lambda p: p.stem)
def test_a_command_imports_no_stage_but_its_own(path):
    own = COMMAND_STAGES.get(path.stem, set())
    imported = _stage_imports(path)
    for (command, stage), names in TOLERATED.items():
        if command == path.stem:
            assert imported.get(stage, set()) == names, (
                f"pipeline/commands/{path.name}: the tolerated import of {sorted(names)} from stages/{stage}.py "
                f"is gone or changed ({sorted(imported.get(stage, set()))}); remove it from TOLERATED")
            imported.pop(stage)
    foreign = {stage: sorted(names) for stage, names in imported.items() if stage not in own}
    assert not foreign, f"pipeline/commands/{path.name} imports other commands' stages: {foreign}"


def test_dvc_train_stage_names_run_folders_as_the_code_does():
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]
    name = run_name("${item.method}", "${item.seed}")
    outs = [out if isinstance(out, str) else next(iter(out)) for out in stage["outs"]]  # path or {path: flags}
    assert f"/{name}" in stage["cmd"] and any(out.endswith(f"/{name}") for out in outs)


# package -> packages of the project it must never import (imports run pipeline -> etl, models, evaluation)
FORBIDDEN = {"evaluation": {"pipeline"}, "models": {"pipeline"}, "etl": {"pipeline", "models", "evaluation"}}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_run_one_way_from_pipeline_to_etl_models_and_evaluation(package):
    wrong = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for banned in FORBIDDEN[package]:
            if _imports_module(path, banned):
                wrong.append(f"{path.relative_to(ROOT)} imports {banned}")
    assert not wrong, wrong

"""Every DVC stage lists, among its deps, every project file its command imports.

The import closure is computed statically (every `import` and `from ... import` in the
project, including those inside functions, followed transitively), starting from the
command's module. A file imported but not covered by a dep means a code change that DVC
would not re-run the stage for.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "etl", "models", "evaluation")
# Commands whose stage module is chosen at run time from the first argument.
DYNAMIC = {("etl", "mimic"): "pipeline/stages/etl_mimic.py", ("etl", "adni"): "pipeline/stages/etl_adni.py"}


def _module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    if path.name == "__init__.py":
        package = package.rsplit(".", 1)[0] + "._"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = package.rsplit(".", node.level)[0]
                base = f"{parent}.{node.module}" if node.module else parent
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
    found = {n.removeprefix("clinfuse.") for n in found}  # installed as clinfuse.<folder>; files stay at <folder>/
    return {n for n in found if n.split(".")[0] in PACKAGES}


def import_closure(start: list[Path]) -> set[Path]:
    seen: set[Path] = set()
    todo = list(start)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if path == ROOT / "pipeline" / "config.py":  # it imports each params section's settings module by name
            modules = re.findall(r'\("\w+", "(\w+)", "\w+Settings"\)', path.read_text())
            todo.extend(f for m in modules if (f := ROOT / "pipeline" / "settings" / f"{m}.py").is_file())
        for name in _imports(path):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # a module imports its packages' __init__ too
                f = _module_file(".".join(parts[:i]))
                if f is not None and f not in seen:
                    todo.append(f)
    return seen


def _stages():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for name, stage in dvc["stages"].items():
        body = stage.get("do", stage)
        words = body["cmd"].split()
        assert words[0] == "clinfuse", f"stage {name}: expected a clinfuse command"
        yield name, words, [d if isinstance(d, str) else next(iter(d)) for d in body.get("deps", [])]


@pytest.mark.parametrize(("stage", "words", "deps"), list(_stages()), ids=[s for s, *_ in _stages()])
def test_stage_deps_cover_every_project_file_its_command_imports(stage, words, deps):
    start = [ROOT / "pipeline" / "commands" / f"{words[1]}.py"]
    if (words[1], words[2]) in DYNAMIC:
        start.append(ROOT / DYNAMIC[(words[1], words[2])])
    covered = [ROOT / d for d in deps if "${" not in d]
    missing = sorted(str(f.relative_to(ROOT)) for f in import_closure(start)
                     if not any(f == c or c in f.parents for c in covered))
    assert not missing, f"stage {stage}: deps miss files its command imports: {missing}"


@pytest.mark.parametrize(("stage", "words", "deps"), list(_stages()), ids=[s for s, *_ in _stages()])
def test_stage_deps_list_no_project_code_its_command_does_not_import(stage, words, deps):
    # A code dep the command never imports re-runs the stage for nothing (evaluate after a template edit,
    # register after a change to the report). A folder dep must hold an imported module, or data the
    # stage reads (templates, etl/resources): files that are not Python are not checked here.
    start = [ROOT / "pipeline" / "commands" / f"{words[1]}.py"]
    if (words[1], words[2]) in DYNAMIC:
        start.append(ROOT / DYNAMIC[(words[1], words[2])])
    closure = import_closure(start)
    unused = []
    for dep in deps:
        path = ROOT / dep
        if "${" in dep or dep.split("/")[0] not in PACKAGES:
            continue
        if path.suffix == ".py" and path not in closure:
            unused.append(dep)
        elif path.is_dir() and not closure.intersection(path.rglob("*.py")) and not any(
                f.suffix not in (".py", ".pyc") for f in path.rglob("*") if f.is_file()):
            unused.append(dep)
    assert not unused, f"stage {stage}: deps list project code its command does not import: {unused}"

"""Editors and type checkers resolve `clinfuse.*` imports in a checkout without running the code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROOTS = ("pipeline", "etl", "models", "evaluation", "configs")


def test_clinfuse_holds_a_relative_symlink_to_each_top_level_source_folder():
    for name in ROOTS:
        link = ROOT / "clinfuse" / name
        assert link.is_symlink() and os.readlink(link) == f"../{name}", name
        assert link.resolve() == ROOT / name


def test_jedi_goes_from_a_clinfuse_import_to_its_definition():
    jedi = pytest.importorskip("jedi")
    source = "from clinfuse.etl.errors import ConfigError\nConfigError\n"
    script = jedi.Script(source, path=ROOT / "pipeline" / "probe.py", project=jedi.Project(ROOT))
    (found,) = script.goto(2, 3, follow_imports=True)
    assert found.module_path.resolve() == ROOT / "etl" / "errors.py"
    assert found.line == next(i for i, line in enumerate((ROOT / "etl" / "errors.py").read_text().splitlines(), 1)
                              if line.startswith("class ConfigError"))


def test_code_imported_through_the_namespace_is_the_checkouts_own_files():
    import clinfuse.etl.errors
    import clinfuse.pipeline.cli

    assert Path(clinfuse.pipeline.cli.__file__).resolve() == ROOT / "pipeline" / "cli.py"
    assert Path(clinfuse.etl.errors.__file__).resolve() == ROOT / "etl" / "errors.py"

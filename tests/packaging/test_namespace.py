"""pyproject.toml installs every package folder under the clinfuse namespace (nothing left behind)."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
ROOTS = ("pipeline", "etl", "models", "evaluation", "configs")


def test_every_package_folder_is_installed_as_clinfuse_dot_its_path():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {".".join(("clinfuse", *p.parent.relative_to(ROOT).parts))
               for r in ROOTS for p in (ROOT / r).rglob("__init__.py") if "__pycache__" not in p.parts}
    assert set(tool["packages"]) == folders | {"clinfuse"}
    assert tool["package-dir"] == {"clinfuse": "clinfuse", **{f"clinfuse.{r}": r for r in ROOTS}}


def test_the_command_line_entry_point_is_inside_the_namespace():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"clinfuse": "clinfuse.pipeline.cli:main"}

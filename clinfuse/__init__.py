"""clinfuse: clinical multimodal fusion (MIMIC-IV + MIMIC-CXR, ADNI) with the MASAM optimizer.

The code lives in the checkout's top-level folders pipeline/, etl/, models/, evaluation/ and configs/,
installed as `clinfuse.pipeline`, `clinfuse.etl`, `clinfuse.models`, `clinfuse.evaluation` and
`clinfuse.configs` (pyproject.toml `package-dir`). Under one namespace, an installed clinfuse never
shadows, and is never shadowed by, a notebook's own `models/` or `pipeline/` package.

In a checkout, clinfuse/ holds one relative symlink per folder (clinfuse/pipeline -> ../pipeline, ...):
the namespace is a plain folder tree that editors and type checkers (jedi, pyright, mypy) resolve
statically, and the code is imported through it (PYTHONPATH=<repo> or the editable install).
"""

from pathlib import Path as _Path

_here = _Path(__file__).resolve().parent
if not (_here / "pipeline").is_dir() and (_here.parent / "pipeline" / "cli.py").is_file():
    # A copy of the checkout without the symlinks (mutmut's mutants/, a file system without symlinks):
    # the subpackages are the folders beside this one.
    __path__.append(str(_here.parent))  # noqa: F821 - a package's __path__

"""Where a report comes from: the code's git commit (and whether the tree had uncommitted
changes) and the command line that reproduces it. Computed here and passed to the
report as plain data (evaluation never runs git)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def git_state(root: Path = ROOT) -> dict:
    """{"commit": sha or None, "dirty": bool or None, "changed_files": int}; None values outside a git checkout."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "changed_files": 0}
    status = git("status", "--porcelain", "--untracked-files=no") or ""
    changed = [line for line in status.splitlines() if line.strip()]
    return {"commit": commit.strip(), "dirty": bool(changed), "changed_files": len(changed)}


def command_line(args: list[str]) -> str:
    """`clinfuse <args>` quoted for a POSIX shell."""
    return "clinfuse " + shlex.join(args)

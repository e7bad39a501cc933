"""Checkpoint files of a run folder: their names, an atomic write and a load that runs no code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from clinfuse.etl.atomic import atomic_path
from clinfuse.etl.errors import InputError

CHECKPOINT_LAST = "checkpoint_last.pt"
CHECKPOINT_BEST = "checkpoint_best.pt"


def save_checkpoint(obj: Any, path: Path) -> None:
    """Write `obj` to `path` atomically (a reader never sees half a checkpoint)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint without running code from it.

    `weights_only=True` unpickles only tensors and plain Python containers/numbers/strings,
    so a crafted file cannot execute anything; a file that needs more is refused in one line.
    """
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a checkpoint we trust"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not a clinfuse checkpoint that loads safely (weights only): {first[:200]}") from None
